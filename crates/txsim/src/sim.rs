//! Synthetic card transactions with labelled fraud, after the simulator of Le Borgne et al.,
//! "Reproducible Machine Learning for Credit Card Fraud Detection", chapter 3.2.
//!
//! The pieces are separable so a live load generator can stream days: [`Population`] is drawn
//! once, [`Population::draw_day`] yields one day of genuine traffic, and [`FraudInjector`]
//! carries the compromised terminals and customers from one day to the next.
//! [`Simulator`] wires them together; [`simulate`] is the batch JSON-lines writer on top.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};
use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime, Time};

/// Customers and terminals live on a square map of this side length.
const MAP_SIDE: f64 = 100.0;
const SECONDS_PER_DAY: u32 = 86_400;
const MEAN_SECOND_OF_DAY: f64 = 43_200.0;
const STD_SECOND_OF_DAY: f64 = 20_000.0;
/// Caps the spatial grid so a tiny radius cannot allocate an enormous, mostly empty index.
const MAX_CELLS_PER_AXIS: usize = 1024;

/// Index of a customer in its [`Population`]; printed as `c-<index>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CustomerId(pub u32);

impl CustomerId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c-{}", self.0)
    }
}

/// Index of a terminal in its [`Population`]; printed as `t-<index>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TerminalId(pub u32);

impl TerminalId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t-{}", self.0)
    }
}

/// Days since the simulation start; day 0 is the start date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimDay(pub u32);

/// A money amount in whole cents, so rounding happens once and printing is exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cents(pub u64);

impl Cents {
    /// Rounds to the nearest cent; negative or NaN inputs saturate to zero.
    pub fn from_units(amount: f64) -> Self {
        Cents((amount * 100.0).round() as u64)
    }

    pub fn as_units(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// A point on the `[0, 100]^2` map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Location {
    pub x: f64,
    pub y: f64,
}

impl Location {
    fn uniform<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Location {
            x: uniform(rng, 0.0, MAP_SIDE),
            y: uniform(rng, 0.0, MAP_SIDE),
        }
    }

    pub fn distance(self, other: Location) -> f64 {
        self.squared_distance(other).sqrt()
    }

    /// Radius checks compare squares: `hypot` dominated population building.
    fn squared_distance(self, other: Location) -> f64 {
        let (dx, dy) = (self.x - other.x, self.y - other.y);
        dx * dx + dy * dy
    }
}

/// Uniform on `[low, high)`; written out rather than `random_range` so that degenerate bounds
/// coming from hand-built profiles cannot panic.
fn uniform<R: Rng + ?Sized>(rng: &mut R, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.random::<f64>()
}

/// How a customer spends: where, how much, how often.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CustomerProfile {
    pub location: Location,
    pub mean_amount: f64,
    pub std_amount: f64,
    pub mean_transactions_per_day: f64,
}

impl CustomerProfile {
    fn random<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let location = Location::uniform(rng);
        let mean_amount = uniform(rng, 5.0, 100.0);
        CustomerProfile {
            location,
            mean_amount,
            std_amount: mean_amount / 2.0,
            mean_transactions_per_day: uniform(rng, 0.0, 4.0),
        }
    }

    fn draw_transaction_count<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        // Poisson::new rejects a zero rate, which is a legitimate "never buys" customer.
        match Poisson::new(self.mean_transactions_per_day) {
            Ok(poisson) => poisson.sample(rng) as u64,
            Err(_) => 0,
        }
    }

    fn draw_amount<R: Rng + ?Sized>(&self, rng: &mut R) -> Cents {
        let z: f64 = rng.sample(StandardNormal);
        let amount = self.mean_amount + self.std_amount * z;
        if amount < 0.0 {
            // The book redraws rather than clamps, so small customers do not pile up at zero.
            Cents::from_units(uniform(rng, 0.0, 2.0 * self.mean_amount))
        } else {
            Cents::from_units(amount)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TerminalProfile {
    pub location: Location,
}

/// Distance within which a customer uses a terminal; finite and non-negative by construction.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Radius(f64);

impl Radius {
    pub fn new(radius: f64) -> Result<Self, InvalidRadius> {
        if radius.is_finite() && radius >= 0.0 {
            Ok(Radius(radius))
        } else {
            Err(InvalidRadius)
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl Default for Radius {
    fn default() -> Self {
        Radius(5.0)
    }
}

impl FromStr for Radius {
    type Err = InvalidRadius;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<f64>()
            .map_err(|_| InvalidRadius)
            .and_then(Radius::new)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidRadius;

impl fmt::Display for InvalidRadius {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("radius must be a finite number >= 0")
    }
}

impl std::error::Error for InvalidRadius {}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PopulationParams {
    pub customers: u32,
    pub terminals: u32,
    pub radius: Radius,
}

impl Default for PopulationParams {
    /// The book's population.
    fn default() -> Self {
        PopulationParams {
            customers: 5_000,
            terminals: 10_000,
            radius: Radius::default(),
        }
    }
}

/// Customers, terminals, and which terminals each customer can reach.
///
/// The reachable lists are stored back to back in one vector (offsets per customer) because
/// with a million customers a `Vec` per customer would cost more in headers than in ids.
#[derive(Clone, Debug)]
pub struct Population {
    customers: Vec<CustomerProfile>,
    terminals: Vec<TerminalProfile>,
    reachable_start: Vec<usize>,
    reachable: Vec<TerminalId>,
}

impl Population {
    /// Draws customers, then terminals, then links each customer to the terminals strictly
    /// closer than the radius. Memory is about `4 * customers * terminals * pi * r^2 / 10^4`
    /// bytes for the links (~310 MB for 10^6 customers, 10^4 terminals, r = 5).
    pub fn generate<R: Rng + ?Sized>(rng: &mut R, params: &PopulationParams) -> Self {
        let customers: Vec<CustomerProfile> = (0..params.customers)
            .map(|_| CustomerProfile::random(rng))
            .collect();
        let terminals: Vec<TerminalProfile> = (0..params.terminals)
            .map(|_| TerminalProfile {
                location: Location::uniform(rng),
            })
            .collect();
        Self::link(customers, terminals, params.radius)
    }

    /// Builds a population from given profiles, e.g. to replay a recorded one.
    pub fn from_profiles(
        customers: Vec<CustomerProfile>,
        terminals: Vec<TerminalProfile>,
        radius: Radius,
    ) -> Self {
        Self::link(customers, terminals, radius)
    }

    fn link(
        customers: Vec<CustomerProfile>,
        terminals: Vec<TerminalProfile>,
        radius: Radius,
    ) -> Self {
        let grid = TerminalGrid::build(&terminals, radius);
        let mut reachable_start = Vec::with_capacity(customers.len() + 1);
        let mut reachable = Vec::new();
        reachable_start.push(0);
        for customer in &customers {
            let first = reachable.len();
            grid.for_each_within(customer.location, radius, &terminals, |id| {
                reachable.push(id)
            });
            // Grid cells are visited in map order; id order keeps the lists easy to inspect.
            reachable[first..].sort_unstable();
            reachable_start.push(reachable.len());
        }
        Population {
            customers,
            terminals,
            reachable_start,
            reachable,
        }
    }

    pub fn customer_count(&self) -> usize {
        self.customers.len()
    }

    pub fn terminal_count(&self) -> usize {
        self.terminals.len()
    }

    pub fn customers(&self) -> &[CustomerProfile] {
        &self.customers
    }

    pub fn terminals(&self) -> &[TerminalProfile] {
        &self.terminals
    }

    pub fn customer(&self, id: CustomerId) -> Option<&CustomerProfile> {
        self.customers.get(id.index())
    }

    pub fn terminal(&self, id: TerminalId) -> Option<&TerminalProfile> {
        self.terminals.get(id.index())
    }

    /// Terminals the customer can use, ascending; empty for an unknown customer.
    pub fn terminals_of(&self, id: CustomerId) -> &[TerminalId] {
        let i = id.index();
        match (self.reachable_start.get(i), self.reachable_start.get(i + 1)) {
            (Some(&start), Some(&end)) => &self.reachable[start..end],
            _ => &[],
        }
    }

    /// Replaces `out` with one day of genuine transactions, sorted by time of day.
    ///
    /// Ties keep generation order (customer index, then draw order), so the order is a pure
    /// function of the RNG state.
    pub fn draw_day<R: Rng + ?Sized>(&self, rng: &mut R, day: SimDay, out: &mut Vec<Transaction>) {
        out.clear();
        for (index, profile) in self.customers.iter().enumerate() {
            let customer = CustomerId(index as u32);
            let terminals = self.terminals_of(customer);
            if terminals.is_empty() {
                continue;
            }
            for _ in 0..profile.draw_transaction_count(rng) {
                let z: f64 = rng.sample(StandardNormal);
                let second = (MEAN_SECOND_OF_DAY + STD_SECOND_OF_DAY * z).floor();
                // Dropped, not clamped: clamping would put spikes at midnight.
                if !(0.0..f64::from(SECONDS_PER_DAY)).contains(&second) {
                    continue;
                }
                let amount = profile.draw_amount(rng);
                let terminal = terminals[rng.random_range(0..terminals.len())];
                out.push(Transaction {
                    day,
                    second_of_day: second as u32,
                    customer,
                    terminal,
                    amount,
                    label: FraudLabel::Genuine,
                });
            }
        }
        out.sort_by_key(|tx| tx.second_of_day);
    }
}

/// Terminals bucketed into square cells at least one radius wide, so a radius query only
/// looks at the 3x3 block of cells around the customer.
struct TerminalGrid {
    cells_per_axis: usize,
    cell_side: f64,
    cell_start: Vec<usize>,
    ids: Vec<TerminalId>,
}

impl TerminalGrid {
    fn build(terminals: &[TerminalProfile], radius: Radius) -> Self {
        // floor(side / r) cells of side >= r; a zero radius gives +inf and hits the cap.
        let cells_per_axis = (MAP_SIDE / radius.get())
            .floor()
            .clamp(1.0, MAX_CELLS_PER_AXIS as f64) as usize;
        let mut grid = TerminalGrid {
            cells_per_axis,
            cell_side: MAP_SIDE / cells_per_axis as f64,
            cell_start: vec![0; cells_per_axis * cells_per_axis + 1],
            ids: vec![TerminalId(0); terminals.len()],
        };
        let cells: Vec<usize> = terminals.iter().map(|t| grid.cell_of(t.location)).collect();
        for &cell in &cells {
            grid.cell_start[cell + 1] += 1;
        }
        for i in 1..grid.cell_start.len() {
            grid.cell_start[i] += grid.cell_start[i - 1];
        }
        let mut next = grid.cell_start.clone();
        for (index, &cell) in cells.iter().enumerate() {
            grid.ids[next[cell]] = TerminalId(index as u32);
            next[cell] += 1;
        }
        grid
    }

    fn axis_cell(&self, coordinate: f64) -> usize {
        // `as usize` saturates, so off-map coordinates land in the border cells.
        ((coordinate / self.cell_side) as usize).min(self.cells_per_axis - 1)
    }

    fn cell_of(&self, location: Location) -> usize {
        self.axis_cell(location.y) * self.cells_per_axis + self.axis_cell(location.x)
    }

    fn for_each_within(
        &self,
        center: Location,
        radius: Radius,
        terminals: &[TerminalProfile],
        mut visit: impl FnMut(TerminalId),
    ) {
        let radius_squared = radius.get() * radius.get();
        let last = self.cells_per_axis - 1;
        let (cx, cy) = (self.axis_cell(center.x), self.axis_cell(center.y));
        for row in cy.saturating_sub(1)..=(cy + 1).min(last) {
            for column in cx.saturating_sub(1)..=(cx + 1).min(last) {
                let cell = row * self.cells_per_axis + column;
                for &id in &self.ids[self.cell_start[cell]..self.cell_start[cell + 1]] {
                    if terminals[id.index()].location.squared_distance(center) < radius_squared {
                        visit(id);
                    }
                }
            }
        }
    }
}

/// Ground truth of a transaction; the discriminant is the book's scenario code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FraudLabel {
    Genuine = 0,
    /// Scenario 1: the amount alone is suspicious.
    HighAmount = 1,
    /// Scenario 2: the terminal was compromised recently.
    CompromisedTerminal = 2,
    /// Scenario 3: the customer's credentials leaked and the amount was inflated.
    CompromisedCustomer = 3,
}

impl FraudLabel {
    pub fn is_fraud(self) -> bool {
        self != FraudLabel::Genuine
    }

    pub fn scenario(self) -> u8 {
        self as u8
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transaction {
    pub day: SimDay,
    /// Seconds since midnight UTC of `day`, below 86 400.
    pub second_of_day: u32,
    pub customer: CustomerId,
    pub terminal: TerminalId,
    pub amount: Cents,
    pub label: FraudLabel,
}

/// Knobs of the three fraud scenarios; the defaults are the book's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FraudParams {
    /// Scenario 1 labels amounts strictly above this.
    pub high_amount_threshold: Cents,
    pub terminals_compromised_per_day: u32,
    /// Days, starting with the compromise day, during which a terminal's traffic is fraud.
    pub terminal_window_days: u32,
    pub customers_compromised_per_day: u32,
    /// Days, starting with the compromise day, during which a customer's card is abused.
    pub customer_window_days: u32,
    /// Share of a compromised customer's transactions that are abused.
    pub customer_abuse_probability: f64,
    pub customer_amount_multiplier: u64,
}

impl Default for FraudParams {
    fn default() -> Self {
        FraudParams {
            high_amount_threshold: Cents(220 * 100),
            terminals_compromised_per_day: 2,
            terminal_window_days: 28,
            customers_compromised_per_day: 3,
            customer_window_days: 14,
            customer_abuse_probability: 1.0 / 3.0,
            customer_amount_multiplier: 5,
        }
    }
}

/// What the fraudsters took over on one day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compromises {
    pub terminals: Vec<TerminalId>,
    pub customers: Vec<CustomerId>,
}

/// Fraud state carried across days: which terminals and customers are currently compromised.
///
/// Scenario 3 in the book picks exactly a third of the window's transactions, which needs the
/// whole window up front; here each transaction in an open window is abused with probability
/// one third instead, so days can be produced one at a time with the same expected share.
/// Overlapping windows for one customer are independent draws, as in the book.
#[derive(Clone, Debug)]
pub struct FraudInjector {
    params: FraudParams,
    open_terminal_windows: Vec<u32>,
    open_customer_windows: Vec<u32>,
    /// (first day no longer covered, terminal); FIFO because every window has the same length.
    terminal_expiries: VecDeque<(SimDay, TerminalId)>,
    customer_expiries: VecDeque<(SimDay, CustomerId)>,
}

impl FraudInjector {
    pub fn new(params: FraudParams, population: &Population) -> Self {
        FraudInjector {
            params,
            open_terminal_windows: vec![0; population.terminal_count()],
            open_customer_windows: vec![0; population.customer_count()],
            terminal_expiries: VecDeque::new(),
            customer_expiries: VecDeque::new(),
        }
    }

    pub fn params(&self) -> &FraudParams {
        &self.params
    }

    /// Compromises the day's terminals and customers, then labels `transactions` (all of
    /// `day`, fresh from [`Population::draw_day`]) in scenario order 1, 2, 3, later scenarios
    /// overriding the label. Call once per day, with increasing days.
    pub fn apply_day<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        day: SimDay,
        transactions: &mut [Transaction],
    ) -> Compromises {
        let params = self.params;
        let terminals: Vec<TerminalId> = sample_ids(
            rng,
            self.open_terminal_windows.len(),
            params.terminals_compromised_per_day,
        )
        .map(TerminalId)
        .collect();
        let customers: Vec<CustomerId> = sample_ids(
            rng,
            self.open_customer_windows.len(),
            params.customers_compromised_per_day,
        )
        .map(CustomerId)
        .collect();
        open_windows(
            &mut self.open_terminal_windows,
            &mut self.terminal_expiries,
            &terminals,
            TerminalId::index,
            window_end(day, params.terminal_window_days),
        );
        open_windows(
            &mut self.open_customer_windows,
            &mut self.customer_expiries,
            &customers,
            CustomerId::index,
            window_end(day, params.customer_window_days),
        );
        close_windows(
            &mut self.open_terminal_windows,
            &mut self.terminal_expiries,
            day,
            TerminalId::index,
        );
        close_windows(
            &mut self.open_customer_windows,
            &mut self.customer_expiries,
            day,
            CustomerId::index,
        );

        for tx in transactions.iter_mut() {
            let mut label = FraudLabel::Genuine;
            if tx.amount > params.high_amount_threshold {
                label = FraudLabel::HighAmount;
            }
            if open_count(&self.open_terminal_windows, tx.terminal.index()) > 0 {
                label = FraudLabel::CompromisedTerminal;
            }
            for _ in 0..open_count(&self.open_customer_windows, tx.customer.index()) {
                if rng.random::<f64>() < params.customer_abuse_probability {
                    tx.amount = Cents(
                        tx.amount
                            .0
                            .saturating_mul(params.customer_amount_multiplier),
                    );
                    label = FraudLabel::CompromisedCustomer;
                }
            }
            tx.label = label;
        }
        Compromises {
            terminals,
            customers,
        }
    }
}

fn sample_ids<R: Rng + ?Sized>(
    rng: &mut R,
    population: usize,
    wanted: u32,
) -> impl Iterator<Item = u32> {
    let amount = (wanted as usize).min(population);
    let mut ids: Vec<u32> = index::sample(rng, population, amount)
        .into_iter()
        .map(|i| i as u32)
        .collect();
    ids.sort_unstable();
    ids.into_iter()
}

fn window_end(day: SimDay, length: u32) -> SimDay {
    SimDay(day.0.saturating_add(length))
}

fn open_windows<Id: Copy>(
    counts: &mut [u32],
    expiries: &mut VecDeque<(SimDay, Id)>,
    ids: &[Id],
    index: fn(Id) -> usize,
    end: SimDay,
) {
    for &id in ids {
        counts[index(id)] += 1;
        expiries.push_back((end, id));
    }
}

fn close_windows<Id: Copy>(
    counts: &mut [u32],
    expiries: &mut VecDeque<(SimDay, Id)>,
    today: SimDay,
    index: fn(Id) -> usize,
) {
    while let Some(&(end, id)) = expiries.front() {
        if end > today {
            break;
        }
        expiries.pop_front();
        counts[index(id)] -= 1;
    }
}

fn open_count(counts: &[u32], index: usize) -> u32 {
    // Transactions from another population are treated as untouched rather than panicking.
    counts.get(index).copied().unwrap_or(0)
}

/// Independent random streams derived from one seed, so that e.g. changing the fraud
/// parameters does not change the population or the genuine traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RngStream {
    Population = 0,
    Transactions = 1,
    Fraud = 2,
}

pub fn seeded_rng(seed: u64, stream: RngStream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

/// Day-by-day generator: population, genuine traffic and fraud state behind one handle.
#[derive(Clone, Debug)]
pub struct Simulator {
    population: Population,
    fraud: FraudInjector,
    transaction_rng: ChaCha8Rng,
    fraud_rng: ChaCha8Rng,
    next_day: SimDay,
}

impl Simulator {
    pub fn new(seed: u64, population: &PopulationParams, fraud: FraudParams) -> Self {
        let population =
            Population::generate(&mut seeded_rng(seed, RngStream::Population), population);
        Self::with_population(seed, population, fraud)
    }

    pub fn with_population(seed: u64, population: Population, fraud: FraudParams) -> Self {
        Simulator {
            fraud: FraudInjector::new(fraud, &population),
            population,
            transaction_rng: seeded_rng(seed, RngStream::Transactions),
            fraud_rng: seeded_rng(seed, RngStream::Fraud),
            next_day: SimDay(0),
        }
    }

    pub fn population(&self) -> &Population {
        &self.population
    }

    /// The day the next call to [`Simulator::next_day`] produces.
    pub fn upcoming_day(&self) -> SimDay {
        self.next_day
    }

    /// Replaces `out` with the next day's labelled transactions, sorted by time of day.
    pub fn next_day(&mut self, out: &mut Vec<Transaction>) -> Compromises {
        let day = self.next_day;
        self.population
            .draw_day(&mut self.transaction_rng, day, out);
        let compromises = self.fraud.apply_day(&mut self.fraud_rng, day, out);
        self.next_day = SimDay(day.0.saturating_add(1));
        compromises
    }
}

/// Maps simulation days to wall-clock instants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    start: OffsetDateTime,
}

impl Clock {
    /// Day 0 starts at midnight UTC of `start_date`.
    pub fn new(start_date: Date) -> Self {
        Clock {
            start: start_date.with_time(Time::MIDNIGHT).assume_utc(),
        }
    }

    pub fn timestamp(&self, day: SimDay, second_of_day: u32) -> Option<OffsetDateTime> {
        let seconds = i64::from(day.0) * i64::from(SECONDS_PER_DAY) + i64::from(second_of_day);
        self.start.checked_add(Duration::seconds(seconds))
    }
}

/// Writes one transaction as a line of the service's input format plus the ground truth.
pub fn write_labelled_json_line<W: Write + ?Sized>(
    out: &mut W,
    transaction_number: u64,
    timestamp: OffsetDateTime,
    tx: &Transaction,
) -> io::Result<()> {
    write!(
        out,
        "{{\"transaction_id\":\"tx-{transaction_number}\",\"customer_id\":\"{}\",\
         \"terminal_id\":\"{}\",\"amount\":{},\"timestamp\":\"",
        tx.customer, tx.terminal, tx.amount
    )?;
    timestamp
        .format_into(out, &Rfc3339)
        .map_err(|err| match err {
            time::error::Format::StdIo(io_error) => io_error,
            other => io::Error::other(other),
        })?;
    writeln!(
        out,
        "\",\"is_fraud\":{},\"fraud_scenario\":{}}}",
        u8::from(tx.label.is_fraud()),
        tx.label.scenario()
    )
}

/// Writes the fraud label of one transaction, as on the service's labels topic, known `delay`
/// after the transaction.
pub fn write_label_line<W: Write + ?Sized>(
    out: &mut W,
    transaction_number: u64,
    timestamp: OffsetDateTime,
    delay: time::Duration,
    tx: &Transaction,
) -> io::Result<()> {
    let rfc3339 = |t: OffsetDateTime| t.format(&Rfc3339).map_err(io::Error::other);
    writeln!(
        out,
        "{{\"transaction_id\":\"tx-{transaction_number}\",\"customer_id\":\"{}\",\
         \"terminal_id\":\"{}\",\"timestamp\":\"{}\",\"label\":\"{}\",\"labelled_at\":\"{}\"}}",
        tx.customer,
        tx.terminal,
        rfc3339(timestamp)?,
        if tx.label.is_fraud() {
            "fraud"
        } else {
            "genuine"
        },
        rfc3339(timestamp + delay)?,
    )
}

/// Everything the batch `simulate` command needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimulationConfig {
    pub seed: u64,
    pub population: PopulationParams,
    pub fraud: FraudParams,
    pub days: u32,
    pub start_date: Date,
}

impl Default for SimulationConfig {
    /// The book's run: 183 days from 2018-04-01.
    fn default() -> Self {
        SimulationConfig {
            seed: 1,
            population: PopulationParams::default(),
            fraud: FraudParams::default(),
            days: 183,
            start_date: time::macros::date!(2018 - 04 - 01),
        }
    }
}

/// Counts of what was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub transactions: u64,
    /// Indexed by scenario code; index 0 counts genuine transactions.
    pub by_scenario: [u64; 4],
}

impl Summary {
    pub fn record(&mut self, tx: &Transaction) {
        self.transactions += 1;
        self.by_scenario[usize::from(tx.label.scenario())] += 1;
    }

    pub fn frauds(&self) -> u64 {
        self.transactions - self.by_scenario[0]
    }

    pub fn fraud_rate(&self) -> f64 {
        if self.transactions == 0 {
            0.0
        } else {
            self.frauds() as f64 / self.transactions as f64
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transactions={} frauds={} fraud_rate={:.4}% scenario1={} scenario2={} scenario3={}",
            self.transactions,
            self.frauds(),
            100.0 * self.fraud_rate(),
            self.by_scenario[1],
            self.by_scenario[2],
            self.by_scenario[3]
        )
    }
}

/// Runs the whole simulation and writes it as JSON lines sorted by time; `out` should be
/// buffered. Numbering is `tx-0`, `tx-1`, ... in output order.
pub fn simulate<W: Write + ?Sized>(config: &SimulationConfig, out: &mut W) -> io::Result<Summary> {
    simulate_with_labels(config, out, None)
}

/// [`simulate`], also writing one label per transaction into `labels`, known the given delay
/// after it (in the same order: the delay is the same for all).
pub fn simulate_with_labels<W: Write + ?Sized>(
    config: &SimulationConfig,
    out: &mut W,
    mut labels: Option<(&mut dyn Write, time::Duration)>,
) -> io::Result<Summary> {
    let clock = Clock::new(config.start_date);
    // RFC 3339 only has four-digit years; fail before writing anything rather than midway.
    if config.days > 0 {
        let last = clock.timestamp(SimDay(config.days - 1), SECONDS_PER_DAY - 1);
        if !last.is_some_and(|t| (0..=9999).contains(&t.year())) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "simulated period must end before year 10000",
            ));
        }
    }

    let mut simulator = Simulator::new(config.seed, &config.population, config.fraud);
    let mut summary = Summary::default();
    let mut day_transactions = Vec::new();
    for day in 0..config.days {
        simulator.next_day(&mut day_transactions);
        for tx in &day_transactions {
            let timestamp = clock
                .timestamp(SimDay(day), tx.second_of_day)
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "timestamp out of range")
                })?;
            write_labelled_json_line(out, summary.transactions, timestamp, tx)?;
            if let Some((labels, delay)) = labels.as_mut() {
                write_label_line(*labels, summary.transactions, timestamp, *delay, tx)?;
            }
            summary.record(tx);
        }
    }
    out.flush()?;
    if let Some((labels, _)) = labels.as_mut() {
        labels.flush()?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_config(seed: u64) -> SimulationConfig {
        SimulationConfig {
            seed,
            population: PopulationParams {
                customers: 300,
                terminals: 600,
                radius: Radius::default(),
            },
            days: 20,
            ..SimulationConfig::default()
        }
    }

    fn simulate_to_bytes(config: &SimulationConfig) -> Vec<u8> {
        let mut bytes = Vec::new();
        simulate(config, &mut bytes).expect("writing to a Vec cannot fail");
        bytes
    }

    #[test]
    fn same_seed_gives_identical_bytes_and_other_seed_differs() {
        let first = simulate_to_bytes(&small_config(7));
        let second = simulate_to_bytes(&small_config(7));
        let other = simulate_to_bytes(&small_config(8));
        assert!(!first.is_empty());
        assert_eq!(first, second);
        assert_ne!(first, other);
    }

    #[test]
    fn amounts_print_as_exact_cents() {
        assert_eq!(Cents(5716).to_string(), "57.16");
        assert_eq!(Cents(5).to_string(), "0.05");
        assert_eq!(Cents(0).to_string(), "0.00");
        assert_eq!(Cents::from_units(57.164999), Cents(5716));
        assert_eq!(Cents::from_units(-3.0), Cents(0));
    }

    #[test]
    fn radius_rejects_nonsense() {
        assert!(Radius::new(f64::NAN).is_err());
        assert!(Radius::new(-1.0).is_err());
        assert!(Radius::new(f64::INFINITY).is_err());
        assert_eq!("2.5".parse::<Radius>(), Ok(Radius(2.5)));
        assert!("five".parse::<Radius>().is_err());
    }

    #[test]
    fn grid_lookup_matches_brute_force() {
        let mut rng = seeded_rng(3, RngStream::Population);
        let params = PopulationParams {
            customers: 200,
            terminals: 400,
            radius: Radius::default(),
        };
        let base = Population::generate(&mut rng, &params);
        for radius in [0.0, 0.05, 1.0, 5.0, 33.0, 99.0, 150.0] {
            let radius = Radius::new(radius).expect("valid radius");
            let population = Population::from_profiles(
                base.customers().to_vec(),
                base.terminals().to_vec(),
                radius,
            );
            for (index, customer) in population.customers().iter().enumerate() {
                let expected: Vec<TerminalId> = population
                    .terminals()
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| {
                        t.location.squared_distance(customer.location) < radius.get() * radius.get()
                    })
                    .map(|(i, _)| TerminalId(i as u32))
                    .collect();
                assert_eq!(
                    population.terminals_of(CustomerId(index as u32)),
                    expected.as_slice()
                );
            }
        }
    }

    /// 500 customers, 1000 terminals, 30 days, with the ground truth checked transaction by
    /// transaction against the compromise log.
    #[test]
    fn small_population_is_statistically_sane() {
        const DAYS: u32 = 30;
        let params = PopulationParams {
            customers: 500,
            terminals: 1_000,
            radius: Radius::default(),
        };
        let fraud = FraudParams::default();
        let mut simulator = Simulator::new(11, &params, fraud);
        let population = simulator.population().clone();
        let radius = params.radius.get();

        let mut log: Vec<Compromises> = Vec::new();
        let mut all: Vec<Transaction> = Vec::new();
        let mut day_transactions = Vec::new();
        for day in 0..DAYS {
            assert_eq!(simulator.upcoming_day(), SimDay(day));
            log.push(simulator.next_day(&mut day_transactions));
            assert!(day_transactions
                .windows(2)
                .all(|pair| pair[0].second_of_day <= pair[1].second_of_day));
            all.extend_from_slice(&day_transactions);
        }

        // Volume: each customer with a terminal buys rate * days * P(time kept ~ 0.969).
        let expected_volume: f64 = population
            .customers()
            .iter()
            .enumerate()
            .filter(|(i, _)| !population.terminals_of(CustomerId(*i as u32)).is_empty())
            .map(|(_, c)| c.mean_transactions_per_day * f64::from(DAYS) * 0.969)
            .sum();
        let volume = all.len() as f64;
        assert!(
            (volume / expected_volume - 1.0).abs() < 0.05,
            "{volume} transactions, expected about {expected_volume}"
        );

        let terminal_compromised_within = |terminal: TerminalId, day: u32, window: u32| {
            (day.saturating_sub(window - 1)..=day)
                .any(|d| log[d as usize].terminals.contains(&terminal))
        };
        let customer_compromised_within = |customer: CustomerId, day: u32, window: u32| {
            (day.saturating_sub(window - 1)..=day)
                .any(|d| log[d as usize].customers.contains(&customer))
        };

        let mut summary = Summary::default();
        let (mut abusable, mut abused) = (0u64, 0u64);
        for tx in &all {
            summary.record(tx);
            assert!(tx.day.0 < DAYS);
            assert!(tx.second_of_day < SECONDS_PER_DAY);
            let customer = population.customer(tx.customer).expect("known customer");
            let terminal = population.terminal(tx.terminal).expect("known terminal");
            assert!(customer.location.distance(terminal.location) <= radius);

            let on_hot_terminal =
                terminal_compromised_within(tx.terminal, tx.day.0, fraud.terminal_window_days);
            let hot_customer =
                customer_compromised_within(tx.customer, tx.day.0, fraud.customer_window_days);
            if hot_customer {
                abusable += 1;
            }
            match tx.label {
                FraudLabel::Genuine => {
                    assert!(tx.amount <= fraud.high_amount_threshold);
                    assert!(!on_hot_terminal);
                }
                FraudLabel::HighAmount => {
                    assert!(tx.amount > fraud.high_amount_threshold);
                    assert!(!on_hot_terminal);
                }
                FraudLabel::CompromisedTerminal => assert!(on_hot_terminal),
                FraudLabel::CompromisedCustomer => {
                    assert!(hot_customer);
                    assert_eq!(tx.amount.0 % 5, 0, "inflated amount {}", tx.amount);
                    abused += 1;
                }
            }
        }

        // Scenario 3 abuses about a third of an open window's transactions.
        let share = abused as f64 / abusable as f64;
        assert!(
            abusable > 500,
            "only {abusable} transactions in open windows"
        );
        assert!((0.28..0.39).contains(&share), "abused share {share}");

        // Every scenario fires. Expected rate here (fraud state ramps up over the first weeks):
        // scenario 2 ~ 2 * 15.4 open terminals / 1000 ~ 3.1%, scenario 3 ~ 11 open customers /
        // 500 / 3 ~ 2.2%, scenario 1 ~ 0.06%: about 5.4% with wide spread from terminal usage.
        assert!(summary.by_scenario[1..].iter().all(|&n| n > 0), "{summary}");
        let rate = summary.fraud_rate();
        assert!((0.025..0.10).contains(&rate), "{summary}");
    }

    #[test]
    fn json_lines_are_sorted_well_formed_and_numbered() {
        let config = small_config(5);
        let bytes = simulate_to_bytes(&config);
        let text = std::str::from_utf8(&bytes).expect("utf-8 output");
        let start = Clock::new(config.start_date)
            .timestamp(SimDay(0), 0)
            .expect("start in range");
        let end = start + Duration::days(i64::from(config.days));
        let mut previous = start;
        for (number, line) in text.lines().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line).expect("valid JSON line");
            assert_eq!(value["transaction_id"], format!("tx-{number}"));
            assert!(value["customer_id"]
                .as_str()
                .is_some_and(|s| s.starts_with("c-")));
            assert!(value["terminal_id"]
                .as_str()
                .is_some_and(|s| s.starts_with("t-")));
            let amount = value["amount"].as_f64().expect("numeric amount");
            assert!(amount >= 0.0);
            let raw_amount = line
                .split("\"amount\":")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .expect("amount field");
            let decimals = raw_amount.split('.').nth(1).map_or(0, str::len);
            assert!(decimals <= 2, "{raw_amount}");
            let timestamp = OffsetDateTime::parse(
                value["timestamp"].as_str().expect("timestamp string"),
                &Rfc3339,
            )
            .expect("RFC 3339 timestamp");
            assert!(timestamp >= previous && timestamp < end);
            previous = timestamp;
            let scenario = value["fraud_scenario"].as_u64().expect("scenario");
            let is_fraud = value["is_fraud"].as_u64().expect("is_fraud");
            assert!(scenario <= 3);
            assert_eq!(is_fraud, u64::from(scenario > 0));
        }
    }

    #[test]
    fn rejects_periods_past_year_9999() {
        let config = SimulationConfig {
            start_date: time::macros::date!(9999 - 12 - 01),
            days: 40,
            ..small_config(1)
        };
        let mut bytes = Vec::new();
        let err = simulate(&config, &mut bytes).expect_err("year 10000 is not RFC 3339");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(bytes.is_empty());
    }

    /// The book's run: about 1.75 M transactions and 0.84 % fraud. Slow in debug builds; run
    /// with `cargo test --release -p loadgen -- --ignored`.
    #[test]
    #[ignore]
    fn default_run_matches_the_book_in_size_and_fraud_rate() {
        let summary =
            simulate(&SimulationConfig::default(), &mut io::sink()).expect("sink cannot fail");
        assert!(
            (1_600_000..=1_900_000).contains(&summary.transactions),
            "{summary}"
        );
        assert!((0.006..=0.011).contains(&summary.fraud_rate()), "{summary}");
    }
}
