//! The fraud model: loads an ONNX file through ONNX Runtime, checks its declared features, scores batches.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::{TensorRef, ValueType};

use crate::engine::Thresholds;
use crate::explain::{ExplainError, Explainer, Reason, META_COVERS};
use crate::features::{FeatureError, FeatureSpec};

/// The ONNX Runtime build this service is tested with, from the PyPI wheel `onnxruntime==1.31.1`.
pub const RUNTIME_FILE: &str = "libonnxruntime.so.1.31.1";
/// Where `scripts/setup.sh` puts it, relative to the repository root.
pub const RUNTIME_DIR: &str = ".tools/onnxruntime/onnxruntime/capi";
/// Overrides the search for the runtime library.
pub const RUNTIME_ENV: &str = "FRAUDSCORE_ONNXRUNTIME";

pub const META_FEATURES: &str = "fraudscore.features";
pub const META_VERSION: &str = "fraudscore.model_version";
/// `{"review": {"threshold": r, ...}, "decline": {"threshold": d, ...}}`, chosen on data by the model build.
pub const META_THRESHOLDS: &str = "fraudscore.thresholds";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("ONNX Runtime library not found; looked in: {0}. Run `bash scripts/setup.sh`, or set {RUNTIME_ENV} to the path of {RUNTIME_FILE}")]
    RuntimeNotFound(String),
    #[error("loading ONNX Runtime from {path}: {message}")]
    Runtime { path: PathBuf, message: String },
    /// The runtime failed to load earlier in this process; the message says how.
    #[error("{0}")]
    RuntimeUnavailable(String),
    #[error("model {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("model {path}: metadata property `{META_FEATURES}` is missing: the model must declare the ordered feature names it takes")]
    NoFeatureList { path: PathBuf },
    #[error("model {path}: `{META_FEATURES}` is not a JSON array of names: {message}")]
    BadFeatureList { path: PathBuf, message: String },
    #[error("model {path}: metadata property `{META_THRESHOLDS}` is not {{\"review\": {{\"threshold\": r}}, \"decline\": {{\"threshold\": d}}}} with 0 <= r <= d <= 1: {message}")]
    BadThresholds { path: PathBuf, message: String },
    #[error("model {path}: {source}")]
    Feature { path: PathBuf, source: FeatureError },
    #[error("model {path}: {message}")]
    Shape { path: PathBuf, message: String },
    #[error("model {path}: reading its trees for reason codes: {source}")]
    Explain { path: PathBuf, source: ExplainError },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// The thresholds of `fraudscore.thresholds`; the build's other fields (targets, precision,
/// recall) are for people and are not read.
fn parse_thresholds(json: &str) -> Result<Thresholds, String> {
    #[derive(serde::Deserialize)]
    struct Point {
        threshold: f32,
    }
    #[derive(serde::Deserialize)]
    struct Declared {
        review: Point,
        decline: Point,
    }
    let d: Declared = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Thresholds::new(d.review.threshold, d.decline.threshold).map_err(|e| e.to_string())
}

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Candidate paths for the runtime library, most specific first.
fn runtime_candidates() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os(RUNTIME_ENV) {
        paths.push(PathBuf::from(p));
    }
    // Next to the binary, and in the checkout the binary was built in (target/<profile>/fraudscore).
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            paths.push(dir.join(RUNTIME_FILE));
            paths.push(dir.join(RUNTIME_DIR).join(RUNTIME_FILE));
        }
    }
    paths.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(RUNTIME_DIR)
            .join(RUNTIME_FILE),
    );
    paths
}

/// Loads ONNX Runtime once per process.
fn environment() -> Result<ort::environment::Environment, ModelError> {
    let env = ENVIRONMENT.get_or_init(|| {
        let candidates = runtime_candidates();
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            let list: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            return Err(ModelError::RuntimeNotFound(list.join(", ")).to_string());
        };
        let builder = ort::init_from(path).map_err(|e| {
            ModelError::Runtime {
                path: path.clone(),
                message: e.to_string(),
            }
            .to_string()
        })?;
        builder
            .with_name("fraudscore")
            .with_telemetry(false)
            .build()
            .map_err(|e| {
                ModelError::Runtime {
                    path: path.clone(),
                    message: e.to_string(),
                }
                .to_string()
            })
    });
    env.clone().map_err(ModelError::RuntimeUnavailable)
}

/// A loaded model with the feature spec it asks for.
pub struct Model {
    session: Session,
    spec: FeatureSpec,
    version: String,
    thresholds: Option<Thresholds>,
    /// Column of the fraud class in the probability output, or None when the output is one score per row.
    fraud_column: Option<usize>,
    /// The tree ensemble for reason codes, when the model carries its covers.
    explainer: Option<Explainer>,
    /// Where each input is in the [`Features`](crate::features::Features) it is given: in its
    /// own spec's, or in the engine's when it computes more (see [`Model::bind`]).
    columns: Vec<usize>,
    /// The rows of the last batch scored by [`Model::score_features`].
    row: Vec<f32>,
    phi: Vec<f64>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("version", &self.version)
            .field("thresholds", &self.thresholds)
            .field("features", &self.spec.names())
            .field("explains", &self.explainer.is_some())
            .finish()
    }
}

impl Model {
    /// Loads `path`, reads its feature list and checks it against the input shape.
    pub fn load(path: &Path, intra_threads: usize) -> Result<Model, ModelError> {
        Model::from_bytes(path, &Model::read(path)?, intra_threads)
    }

    /// The bytes of the model file at `path`, for [`Model::from_bytes`].
    pub fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
        std::fs::read(path).map_err(|e| ModelError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The model in `bytes`, read from `path` (named in errors): the session and the reason
    /// codes' trees come from the same bytes, whatever happens to the file meanwhile.
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        intra_threads: usize,
    ) -> Result<Model, ModelError> {
        let load_err = |e: ort::Error| ModelError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let env = environment()?;
        let session = Session::builder(&env)
            .map_err(load_err)?
            .with_intra_threads(intra_threads.max(1))
            .map_err(|e| load_err(e.into()))?
            .commit_from_memory(bytes)
            .map_err(load_err)?;

        let metadata = session.metadata().map_err(load_err)?;
        let list = metadata
            .custom(META_FEATURES)
            .ok_or_else(|| ModelError::NoFeatureList {
                path: path.to_path_buf(),
            })?;
        let names: Vec<String> =
            serde_json::from_str(&list).map_err(|e| ModelError::BadFeatureList {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let spec = FeatureSpec::for_model(&names).map_err(|source| ModelError::Feature {
            path: path.to_path_buf(),
            source,
        })?;
        let file_stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let version = metadata.custom(META_VERSION).unwrap_or(file_stem);
        let thresholds = metadata
            .custom(META_THRESHOLDS)
            .map(|json| parse_thresholds(&json))
            .transpose()
            .map_err(|message| ModelError::BadThresholds {
                path: path.to_path_buf(),
                message,
            })?;
        let covers = metadata.custom(META_COVERS);
        drop(metadata);
        let explain_err = |source: ExplainError| ModelError::Explain {
            path: path.to_path_buf(),
            source,
        };
        let explainer = match covers {
            None => None,
            Some(covers) => match Explainer::from_onnx(bytes, &covers, names.len()) {
                Ok(explainer) => Some(explainer),
                Err(e @ ExplainError::Unsupported(_)) => {
                    tracing::warn!(model = %path.display(), error = %e, "the model scores without reason codes");
                    None
                }
                Err(e) => return Err(explain_err(e)),
            },
        };

        let shape_err = |message: String| ModelError::Shape {
            path: path.to_path_buf(),
            message,
        };
        let [input] = session.inputs() else {
            return Err(shape_err(format!(
                "expected one input (a float tensor [batch, {}]), found {}",
                names.len(),
                session.inputs().len()
            )));
        };
        match input.dtype() {
            ValueType::Tensor { ty, shape, .. }
                if *ty == ort::value::TensorElementType::Float32
                    && shape.len() == 2
                    && (shape[1] == names.len() as i64) => {}
            other => {
                return Err(shape_err(format!(
                    "input `{}` is {other:?}, but `{META_FEATURES}` lists {} features ({}): expected float32 [batch, {}]",
                    input.name(),
                    names.len(),
                    names.join(", "),
                    names.len()
                )))
            }
        }
        let fraud_column = match session.outputs().last().map(|o| o.dtype()) {
            Some(ValueType::Tensor { ty, shape, .. })
                if *ty == ort::value::TensorElementType::Float32 =>
            {
                match shape.as_ref() {
                    [_, 2] => Some(1),
                    [_] | [_, 1] => None,
                    other => {
                        return Err(shape_err(format!(
                            "output shape {other:?}: expected [batch, 2] probabilities or [batch] scores"
                        )))
                    }
                }
            }
            other => {
                return Err(shape_err(format!(
                    "last output is {other:?}: expected a float32 probability tensor (export without ZipMap)"
                )))
            }
        };
        Ok(Model {
            session,
            version,
            thresholds,
            fraud_column,
            explainer,
            columns: spec.columns_of(&names).unwrap_or_default(),
            spec,
            row: Vec::new(),
            phi: Vec::new(),
        })
    }

    /// Takes its inputs from the features of `engine` (a spec computing at least this model's
    /// features, and maybe more for another model); false, and unchanged, if one is missing.
    pub fn bind(&mut self, engine: &FeatureSpec) -> bool {
        let names: Vec<&str> = self.spec.model_names().collect();
        match engine.columns_of(&names) {
            Some(columns) => {
                self.columns = columns;
                true
            }
            None => false,
        }
    }

    /// The tree ensemble behind the reason codes; None for a model without covers.
    pub fn explainer(&self) -> Option<&Explainer> {
        self.explainer.as_ref()
    }

    /// The `top` features that moved row `i` of the last [`score_features`](Self::score_features)
    /// batch the most (by absolute contribution); empty for a model that cannot explain.
    pub fn reasons(&mut self, i: usize, top: usize) -> Vec<Reason> {
        let width = self.spec.model_width();
        let (Some(explainer), Some(row)) =
            (&self.explainer, self.row.get(i * width..(i + 1) * width))
        else {
            return Vec::new();
        };
        explainer.contributions(row, &mut self.phi);
        crate::explain::top_reasons(row, &self.phi, top)
    }

    /// The review and decline thresholds the model was built with, if it declares them.
    pub fn thresholds(&self) -> Option<Thresholds> {
        self.thresholds
    }

    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Scores `rows` (row-major, `spec().model_width()` columns each): the fraud probability of each row.
    pub fn score(&mut self, rows: &[f32], scores: &mut Vec<f32>) -> Result<(), ModelError> {
        scores.clear();
        let width = self.spec.model_width();
        if rows.is_empty() || width == 0 {
            return Ok(());
        }
        let n = rows.len() / width;
        let infer = |e: ort::Error| ModelError::Inference(e.to_string());
        let view = ndarray::ArrayView2::from_shape((n, width), rows)
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let input = TensorRef::from_array_view(view).map_err(infer)?;
        let outputs = self.session.run(ort::inputs![input]).map_err(infer)?;
        let last = outputs.len() - 1;
        let (_, values) = outputs[last].try_extract_tensor::<f32>().map_err(infer)?;
        match self.fraud_column {
            Some(c) => scores.extend(values.chunks_exact(2).map(|pair| pair[c])),
            None => scores.extend_from_slice(values),
        }
        if scores.len() != n {
            return Err(ModelError::Inference(format!(
                "model returned {} scores for {n} rows",
                scores.len()
            )));
        }
        Ok(())
    }

    /// Builds the model input for a batch of feature sets and scores it.
    pub fn score_features<'a>(
        &mut self,
        batch: impl IntoIterator<Item = &'a crate::features::Features>,
        scores: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let mut row = std::mem::take(&mut self.row);
        row.clear();
        for f in batch {
            row.extend(self.columns.iter().map(|&c| f.values()[c] as f32));
        }
        let r = self.score(&row, scores);
        self.row = row;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_thresholds_are_read_and_checked() {
        let json = r#"{"review": {"threshold": 0.25, "precision": 0.7}, "decline": {"threshold": 0.75}, "chosen_on": "..."}"#;
        assert_eq!(
            parse_thresholds(json),
            Thresholds::new(0.25, 0.75).map_err(|e| e.to_string())
        );
        assert!(parse_thresholds(
            r#"{"review": {"threshold": 0.8}, "decline": {"threshold": 0.7}}"#
        )
        .is_err());
        assert!(parse_thresholds(r#"{"review": {"threshold": 0.2}}"#).is_err());
        assert!(parse_thresholds("[]").is_err());
    }
}
