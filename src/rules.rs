//! Rules beside the model: a file of named conditions over features and input fields, each with an action, parsed and checked at load.
//!
//! ```toml
//! [[rule]]
//! name = "velocity_10m"
//! when = "customer_tx_count_10m >= 5"
//! action = "review"
//!
//! [[rule]]
//! name = "trusted_terminals"
//! when = "terminal_id in ['T-1', 'T-2'] and amount < 100"
//! action = "approve"
//! ```
//!
//! A condition compares numbers (`amount`, `score`, any engine feature by its name, number
//! literals, `+ - * /`) with `< <= > >= == !=`, or an id (`customer_id`, `terminal_id`,
//! `transaction_id`) with a quoted string (`==`, `!=`, `in [...]`), and combines those with
//! `and`, `or`, `not` and parentheses. The decision is the strictest of the model's and the
//! fired rules' actions, unless a fired rule says `approve` (an allow-list), which wins.

use std::path::{Path, PathBuf};

use crate::engine::{Decision, Prepared};
use crate::features::{Feature, FeatureSpec};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rules file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("rules file {path}, line {line}: rule `{rule}`: {message}")]
    Rule {
        path: PathBuf,
        line: usize,
        rule: String,
        message: String,
    },
}

/// What a fired rule does to the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Allow-list: the transaction is approved whatever the model and the other rules say.
    Approve,
    Review,
    Decline,
}

/// The rules of one file, in file order, served from the features of a [`FeatureSpec`].
#[derive(Debug)]
pub struct Rules {
    path: PathBuf,
    rules: Vec<Rule>,
    /// Each feature the rules name, and its position in the spec they are bound to.
    features: Vec<(String, usize)>,
}

#[derive(Debug)]
struct Rule {
    name: String,
    condition: Cond,
    action: Action,
}

/// An id field of the input, by whose id it is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Customer,
    Terminal,
    Transaction,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug)]
enum Num {
    Const(f64),
    Amount,
    Score,
    /// Index into [`Rules::features`].
    Feature(usize),
    Neg(Box<Num>),
    Bin(Box<Num>, Arith, Box<Num>),
}

#[derive(Debug)]
enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Compare(Num, Cmp, Num),
    /// The field is one of the strings (`==` has one, `in` many); `negate` for `!=`.
    OneOf {
        field: Field,
        values: Vec<String>,
        negate: bool,
    },
}

impl Rules {
    /// Reads and checks `path`; the rules are bound to the spec they will be served from with
    /// [`Rules::bind`].
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        Rules::parse(path, &Rules::read(path)?)
    }

    /// The text of the rules file at `path`, for [`Rules::parse`].
    pub fn read(path: &Path) -> Result<String, RulesError> {
        std::fs::read_to_string(path).map_err(|e| RulesError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The rules in `text`, read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Rules, RulesError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            rule: Vec<toml::Spanned<RuleText>>,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RuleText {
            name: String,
            when: toml::Spanned<String>,
            action: Action,
        }
        let file: File = toml::from_str(text).map_err(|e| RulesError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let mut rules = Rules {
            path: path.to_path_buf(),
            rules: Vec::new(),
            features: Vec::new(),
        };
        for spanned in file.rule {
            let line = line_of(spanned.span().start);
            let r = spanned.into_inner();
            let err = |line: usize, message: String| RulesError::Rule {
                path: path.to_path_buf(),
                line,
                rule: r.name.clone(),
                message,
            };
            if r.name.is_empty() || rules.rules.iter().any(|x| x.name == r.name) {
                return Err(err(line, "names must be non-empty and distinct".into()));
            }
            let when_line = line_of(r.when.span().start);
            let condition = Parser::new(r.when.get_ref(), &mut rules.features)
                .parse()
                .map_err(|m| err(when_line, m))?;
            rules.rules.push(Rule {
                name: r.name.clone(),
                condition,
                action: r.action,
            });
        }
        Ok(rules)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn name(&self, rule: usize) -> &str {
        self.rules.get(rule).map_or("", |r| r.name.as_str())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// The engine features the rules read, which the engine must compute.
    pub fn features(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|(name, _)| name.as_str())
    }

    /// Reads the features from where `spec` computes them; false, and unchanged, if one is missing.
    pub fn bind(&mut self, spec: &FeatureSpec) -> bool {
        let names: Vec<&str> = self.features().collect();
        match spec.columns_of(&names) {
            Some(columns) => {
                for ((_, column), c) in self.features.iter_mut().zip(columns) {
                    *column = c;
                }
                true
            }
            None => false,
        }
    }

    /// The rules that fire for `prepared`, scored `score` by the model: their indices, in file order.
    pub fn evaluate(&self, prepared: &Prepared, score: f32) -> Vec<usize> {
        let at = Row {
            prepared,
            score: f64::from(score),
            features: &self.features,
        };
        (0..self.rules.len())
            .filter(|&i| at.holds(&self.rules[i].condition))
            .collect()
    }

    /// The model's decision with the fired rules' actions: an allow-list wins, else the strictest.
    pub fn decide(&self, model: Decision, fired: &[usize]) -> Decision {
        let actions = fired
            .iter()
            .filter_map(|&i| self.rules.get(i))
            .map(|r| r.action);
        let mut decision = model;
        for action in actions {
            match action {
                Action::Approve => return Decision::Approve,
                Action::Review => decision = decision.max(Decision::Review),
                Action::Decline => decision = Decision::Decline,
            }
        }
        decision
    }
}

/// One transaction as the conditions see it.
struct Row<'a> {
    prepared: &'a Prepared,
    score: f64,
    features: &'a [(String, usize)],
}

impl Row<'_> {
    fn holds(&self, c: &Cond) -> bool {
        match c {
            Cond::And(a, b) => self.holds(a) && self.holds(b),
            Cond::Or(a, b) => self.holds(a) || self.holds(b),
            Cond::Not(a) => !self.holds(a),
            Cond::Compare(a, op, b) => {
                let (a, b) = (self.num(a), self.num(b));
                match op {
                    Cmp::Lt => a < b,
                    Cmp::Le => a <= b,
                    Cmp::Gt => a > b,
                    Cmp::Ge => a >= b,
                    Cmp::Eq => a == b,
                    Cmp::Ne => a != b,
                }
            }
            Cond::OneOf {
                field,
                values,
                negate,
            } => {
                let t = &self.prepared.transaction;
                let value = match field {
                    Field::Customer => Some(t.customer_id.as_str()),
                    Field::Terminal => t.terminal_id.as_deref(),
                    Field::Transaction => Some(t.transaction_id.as_str()),
                };
                value.is_some_and(|v| values.iter().any(|x| x == v)) != *negate
            }
        }
    }

    fn num(&self, n: &Num) -> f64 {
        match n {
            Num::Const(v) => *v,
            Num::Amount => self.prepared.transaction.amount,
            Num::Score => self.score,
            Num::Feature(i) => self
                .features
                .get(*i)
                .and_then(|(_, column)| self.prepared.features.values().get(*column))
                .copied()
                .unwrap_or(f64::NAN),
            Num::Neg(a) => -self.num(a),
            Num::Bin(a, op, b) => {
                let (a, b) = (self.num(a), self.num(b));
                match op {
                    Arith::Add => a + b,
                    Arith::Sub => a - b,
                    Arith::Mul => a * b,
                    Arith::Div => a / b,
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
}

/// A recursive-descent parser of one condition; errors say what was expected where.
struct Parser<'a> {
    tokens: Vec<(usize, Token)>,
    at: usize,
    text: &'a str,
    features: &'a mut Vec<(String, usize)>,
}

/// What an operand turned out to be, before the comparison that uses it.
enum Operand {
    Num(Num),
    Field(Field),
    Str(String),
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, features: &'a mut Vec<(String, usize)>) -> Parser<'a> {
        Parser {
            tokens: Vec::new(),
            at: 0,
            text,
            features,
        }
    }

    fn parse(mut self) -> Result<Cond, String> {
        self.tokens = tokenize(self.text)?;
        let c = self.or()?;
        match self.tokens.get(self.at) {
            None => Ok(c),
            Some((col, t)) => Err(format!("unexpected {} at column {}", show(t), col + 1)),
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }

    fn column(&self) -> usize {
        self.tokens
            .get(self.at)
            .map_or(self.text.chars().count(), |(c, _)| *c)
            + 1
    }

    fn eat(&mut self, op: &str) -> bool {
        let hit = match self.peek() {
            Some(Token::Op(o)) => *o == op,
            Some(Token::Ident(w)) => w == op,
            _ => false,
        };
        self.at += usize::from(hit);
        hit
    }

    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(format!("expected `{op}` at column {}", self.column()))
        }
    }

    fn or(&mut self) -> Result<Cond, String> {
        let mut c = self.and()?;
        while self.eat("or") {
            c = Cond::Or(Box::new(c), Box::new(self.and()?));
        }
        Ok(c)
    }

    fn and(&mut self) -> Result<Cond, String> {
        let mut c = self.not()?;
        while self.eat("and") {
            c = Cond::And(Box::new(c), Box::new(self.not()?));
        }
        Ok(c)
    }

    fn not(&mut self) -> Result<Cond, String> {
        if self.eat("not") {
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        // A parenthesis opens a condition, unless what follows is arithmetic: try the condition
        // first. If both readings fail, the error that got further says what is wrong.
        let mut first: Option<(usize, String)> = None;
        if self.peek() == Some(&Token::Op("(")) {
            let start = self.at;
            self.at += 1;
            match self.or() {
                Ok(c) if self.eat(")") && !self.at_comparison_or_arith() => return Ok(c),
                Ok(_) => {
                    first = Some((self.at, format!("expected `)` at column {}", self.column())))
                }
                Err(e) => first = Some((self.at, e)),
            }
            self.at = start;
        }
        match self.comparison() {
            Err(e) => match first {
                Some((at, first)) if at > self.at => Err(first),
                _ => Err(e),
            },
            ok => ok,
        }
    }

    fn at_comparison_or_arith(&self) -> bool {
        matches!(self.peek(), Some(Token::Op(o)) if !matches!(*o, "(" | ")" | "[" | "]" | ","))
    }

    fn comparison(&mut self) -> Result<Cond, String> {
        let column = self.column();
        let left = self.sum()?;
        let in_column = self.column();
        if self.eat("in") {
            let Operand::Field(field) = left else {
                return Err(format!("`in` at column {in_column} needs an id field on its left (customer_id, terminal_id, transaction_id)"));
            };
            self.expect("[")?;
            let mut values = Vec::new();
            loop {
                match self.tokens.get(self.at) {
                    Some((_, Token::Str(s))) => {
                        values.push(s.clone());
                        self.at += 1;
                    }
                    _ => {
                        return Err(format!(
                            "expected a quoted string at column {}",
                            self.column()
                        ))
                    }
                }
                if !self.eat(",") {
                    break;
                }
            }
            self.expect("]")?;
            return Ok(Cond::OneOf {
                field,
                values,
                negate: false,
            });
        }
        let op = match self.peek() {
            Some(Token::Op(o)) => match *o {
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                ">" => Cmp::Gt,
                ">=" => Cmp::Ge,
                "==" => Cmp::Eq,
                "!=" => Cmp::Ne,
                _ => return Err(format!("expected a comparison at column {}", self.column())),
            },
            _ => return Err(format!("expected a comparison at column {}", self.column())),
        };
        self.at += 1;
        let right = self.sum()?;
        match (left, right) {
            // The score is a float32: a literal it is compared with is too, so that `score >=
            // 0.9` fires exactly where a 0.9 threshold does.
            (Operand::Num(Num::Score), Operand::Num(Num::Const(c))) => {
                Ok(Cond::Compare(Num::Score, op, Num::Const(f64::from(c as f32))))
            }
            (Operand::Num(Num::Const(c)), Operand::Num(Num::Score)) => {
                Ok(Cond::Compare(Num::Const(f64::from(c as f32)), op, Num::Score))
            }
            (Operand::Num(a), Operand::Num(b)) => Ok(Cond::Compare(a, op, b)),
            (Operand::Field(field), Operand::Str(s)) | (Operand::Str(s), Operand::Field(field))
                if matches!(op, Cmp::Eq | Cmp::Ne) =>
            {
                Ok(Cond::OneOf {
                    field,
                    values: vec![s],
                    negate: op == Cmp::Ne,
                })
            }
            _ => Err(format!(
                "the comparison at column {column} must be between two numbers, or an id field and a quoted string with == or !="
            )),
        }
    }

    fn sum(&mut self) -> Result<Operand, String> {
        self.left_assoc([("+", Arith::Add), ("-", Arith::Sub)], Parser::term)
    }

    fn term(&mut self) -> Result<Operand, String> {
        self.left_assoc([("*", Arith::Mul), ("/", Arith::Div)], Parser::unary)
    }

    /// One level of arithmetic: operands read by `next`, joined left to right by `ops`.
    fn left_assoc(
        &mut self,
        ops: [(&str, Arith); 2],
        next: fn(&mut Self) -> Result<Operand, String>,
    ) -> Result<Operand, String> {
        let mut left = next(self)?;
        loop {
            let Some(op) = ops.iter().find(|(o, _)| self.eat(o)).map(|(_, op)| *op) else {
                return Ok(left);
            };
            let right = next(self)?;
            left = Operand::Num(Num::Bin(
                Box::new(self.number(left)?),
                op,
                Box::new(self.number(right)?),
            ));
        }
    }

    fn unary(&mut self) -> Result<Operand, String> {
        if self.eat("-") {
            let inner = self.unary()?;
            return Ok(Operand::Num(Num::Neg(Box::new(self.number(inner)?))));
        }
        let column = self.column();
        let token = self.tokens.get(self.at).map(|(_, t)| t.clone());
        self.at += 1;
        match token {
            Some(Token::Num(v)) => Ok(Operand::Num(Num::Const(v))),
            Some(Token::Str(s)) => Ok(Operand::Str(s)),
            Some(Token::Op("(")) => {
                let inner = self.sum()?;
                self.expect(")")?;
                Ok(inner)
            }
            Some(Token::Ident(name)) => Ok(match name.as_str() {
                "amount" => Operand::Num(Num::Amount),
                "score" => Operand::Num(Num::Score),
                "customer_id" => Operand::Field(Field::Customer),
                "terminal_id" => Operand::Field(Field::Terminal),
                "transaction_id" => Operand::Field(Field::Transaction),
                _ => {
                    Feature::parse(&name).map_err(|e| format!("at column {column}: {e}"))?;
                    let index = match self.features.iter().position(|(n, _)| *n == name) {
                        Some(i) => i,
                        None => {
                            self.features.push((name, 0));
                            self.features.len() - 1
                        }
                    };
                    Operand::Num(Num::Feature(index))
                }
            }),
            Some(t) => Err(format!("unexpected {} at column {column}", show(&t))),
            None => Err(format!("the condition ends early, at column {column}")),
        }
    }

    fn number(&self, o: Operand) -> Result<Num, String> {
        match o {
            Operand::Num(n) => Ok(n),
            _ => Err(format!(
                "arithmetic before column {} is on something that is not a number",
                self.column()
            )),
        }
    }
}

fn show(t: &Token) -> String {
    match t {
        Token::Num(v) => format!("number {v}"),
        Token::Str(s) => format!("string '{s}'"),
        Token::Ident(w) => format!("`{w}`"),
        Token::Op(o) => format!("`{o}`"),
    }
}

/// Splits a condition into tokens, each with its column (0-based, in characters).
fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, String> {
    const OPS: [&str; 15] = [
        "<=", ">=", "==", "!=", "<", ">", "+", "-", "*", "/", "(", ")", "[", "]", ",",
    ];
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
            let literal: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let v = literal
                .parse::<f64>()
                .map_err(|_| format!("bad number `{literal}` at column {}", start + 1))?;
            tokens.push((start, Token::Num(v)));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push((start, Token::Ident(chars[start..i].iter().collect())));
        } else if c == '\'' || c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += 1;
            }
            if i == chars.len() {
                return Err(format!("unclosed string at column {}", start + 1));
            }
            tokens.push((start, Token::Str(chars[start + 1..i].iter().collect())));
            i += 1;
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
                return Err(format!("unexpected `{c}` at column {}", i + 1));
            };
            tokens.push((i, Token::Op(op)));
            i += op.len();
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{CustomerId, Transaction};
    use crate::time::EventTime;
    use crate::window::WindowStats;

    fn rules(text: &str) -> Result<Rules, String> {
        Rules::parse(Path::new("rules.toml"), text).map_err(|e| e.to_string())
    }

    fn rule(when: &str, action: &str) -> String {
        format!("[[rule]]\nname = \"r\"\nwhen = \"{when}\"\naction = \"{action}\"\n")
    }

    /// A transaction of customer "c-1" at terminal "T-9", `amount`, with 10-minute and
    /// 1-hour counts `count_10m` and `count_1h`, served from a spec computing what `r` reads.
    fn fires(r: &mut Rules, amount: f64, count_10m: u32, count_1h: u32, score: f32) -> bool {
        let names: Vec<&str> = r.features().collect();
        let spec = FeatureSpec::for_models::<&str>(&[], &names).unwrap();
        assert!(r.bind(&spec));
        let stats: Vec<WindowStats> = spec
            .windows()
            .iter()
            .map(|w| WindowStats {
                count: match w.millis() {
                    600_000 => count_10m,
                    3_600_000 => count_1h,
                    _ => 0,
                },
                sum: amount,
            })
            .collect();
        let at = EventTime::checked(1_795_000_000_000i64).unwrap();
        let prepared = Prepared {
            transaction: Transaction {
                transaction_id: "tx-1".into(),
                customer_id: CustomerId::new("c-1"),
                terminal_id: Some("T-9".into()),
                amount,
                timestamp: at,
            },
            features: spec.compute(amount, at, &stats, &[]),
            duplicate: false,
            id_hash: 0,
        };
        r.evaluate(&prepared, score) == [0]
    }

    #[test]
    fn conditions_read_features_fields_and_the_score() {
        let mut velocity = rules(&rule("customer_tx_count_10m >= 5", "review")).unwrap();
        assert!(fires(&mut velocity, 10.0, 5, 5, 0.0));
        assert!(!fires(&mut velocity, 10.0, 4, 9, 0.0));
        // A feature the model may not take: the rules ask the engine for it.
        assert_eq!(
            velocity.features().collect::<Vec<_>>(),
            ["customer_tx_count_10m"]
        );

        let mut big_new = rules(&rule(
            "amount > 5_000 and customer_tx_count_1h <= 1",
            "decline",
        ))
        .unwrap();
        assert!(fires(&mut big_new, 6000.0, 1, 1, 0.0));
        assert!(!fires(&mut big_new, 6000.0, 1, 2, 0.0));
        assert!(!fires(&mut big_new, 5000.0, 1, 1, 0.0));

        // The score is a float32, so is the literal it meets: 0.9 as a threshold and here agree.
        let mut high = rules(&rule("score >= 0.9", "decline")).unwrap();
        assert!(fires(&mut high, 1.0, 0, 0, 0.9));
        assert!(!fires(&mut high, 1.0, 0, 0, 0.899_999_9));

        let mut arithmetic = rules(&rule(
            "(amount - 100) * 2 > 10 * -(-30) or score >= 0.5",
            "review",
        ))
        .unwrap();
        assert!(fires(&mut arithmetic, 251.0, 0, 0, 0.0));
        assert!(!fires(&mut arithmetic, 250.0, 0, 0, 0.0));
        assert!(fires(&mut arithmetic, 1.0, 0, 0, 0.5));

        let mut ids = rules(&rule(
            "terminal_id in ['T-1', 'T-9'] and not customer_id == 'c-2'",
            "approve",
        ))
        .unwrap();
        assert!(fires(&mut ids, 1.0, 0, 0, 0.0));
        let mut other = rules(&rule(
            "terminal_id != 'T-9' or transaction_id == 'tx-2'",
            "approve",
        ))
        .unwrap();
        assert!(!fires(&mut other, 1.0, 0, 0, 0.0));
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_regroup() {
        // false or (true and false) = false; (false or true) and false = false; with the last
        // true, they differ.
        let mut flat = rules(&rule("amount > 5 or amount > 1 and score > 0.5", "review")).unwrap();
        let mut grouped = rules(&rule(
            "(amount > 5 or amount > 1) and score > 0.5",
            "review",
        ))
        .unwrap();
        assert!(!fires(&mut flat, 2.0, 0, 0, 0.0));
        assert!(!fires(&mut grouped, 2.0, 0, 0, 0.0));
        assert!(fires(&mut flat, 6.0, 0, 0, 0.0));
        assert!(!fires(&mut grouped, 6.0, 0, 0, 0.0));
        assert!(fires(&mut grouped, 2.0, 0, 0, 0.9));
    }

    #[test]
    fn an_allow_list_wins_and_otherwise_the_strictest_decides() {
        let text = [
            rule("amount > 100", "review").replace("\"r\"", "\"a\""),
            rule("amount > 1000", "decline").replace("\"r\"", "\"b\""),
            rule("terminal_id == 'T-9'", "approve").replace("\"r\"", "\"c\""),
        ]
        .concat();
        let r = rules(&text).unwrap();
        assert_eq!(r.names().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(r.decide(Decision::Approve, &[]), Decision::Approve);
        assert_eq!(r.decide(Decision::Approve, &[0]), Decision::Review);
        assert_eq!(r.decide(Decision::Decline, &[0]), Decision::Decline);
        assert_eq!(r.decide(Decision::Review, &[0, 1]), Decision::Decline);
        assert_eq!(r.decide(Decision::Decline, &[0, 1, 2]), Decision::Approve);
    }

    #[test]
    fn errors_name_the_file_the_line_the_rule_and_the_column() {
        let text = format!(
            "{}\n[[rule]]\nname = \"bad\"\naction = \"review\"\nwhen = \"amount > 5 and custmer_tx_count_10m > 1\"\n",
            rule("amount > 1", "review")
        );
        let e = rules(&text).unwrap_err();
        assert!(e.starts_with("rules file rules.toml, line 9: rule `bad`: at column 16: unknown feature `custmer_tx_count_10m`"), "{e}");
        for (when, wanted) in [
            ("amount >", "the condition ends early, at column 9"),
            ("amount 5", "expected a comparison at column 8"),
            (
                "customer_id > 'x'",
                "between two numbers, or an id field and a quoted string",
            ),
            ("amount in ['a']", "`in` at column 8 needs an id field"),
            (
                "(amount > 1 and custmer_tx_count_10m > 1)",
                "unknown feature `custmer_tx_count_10m`",
            ),
            (
                "not (amount > 1 or (score > 0.5 and amout > 2))",
                "unknown feature `amout`",
            ),
            ("amount > 'x", "unclosed string at column 10"),
            ("amount > 1 or", "the condition ends early"),
            ("(amount > 1", "expected `)`"),
            ("amount # 1", "unexpected `#` at column 8"),
            ("customer_id + 1 > 2", "not a number"),
        ] {
            let e = rules(&rule(when, "review")).unwrap_err();
            assert!(e.contains(wanted), "{when}: {e}");
        }
        let e = rules(&rule("amount > 1", "block")).unwrap_err();
        assert!(
            e.contains("line 4") && e.contains("unknown variant `block`"),
            "{e}"
        );
        let twice = [rule("amount > 1", "review"), rule("amount > 2", "review")].concat();
        let e = rules(&twice).unwrap_err();
        assert!(e.contains("line 5") && e.contains("distinct"), "{e}");
    }
}
