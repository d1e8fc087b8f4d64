//! The data pipeline: IDX parsing, checksums, the paper's splits, scaling, batching.

mod common;

use std::io::Write;
use std::path::Path;

use bayes_robust::data::{
    self, ChecksumPolicy, DataError, Dataset, IdxArray, IdxFile, RawDataset, ShuffledBatches,
    SplitSpec, Splits,
};
use bayes_robust::seed::SeedTree;
use proptest::prelude::*;
use tch::Kind;

use common::strategies;

#[test]
fn real_mnist_has_the_known_counts_and_range() {
    let raw = RawDataset::load(
        &common::real_mnist_dir(),
        ChecksumPolicy::Require(Dataset::Mnist),
    )
    .expect("real MNIST verifies");
    let splits = Splits::from_raw(&raw, SplitSpec::PAPER).unwrap();
    assert_eq!(
        (
            splits.train.len(),
            splits.validation.len(),
            splits.test.len()
        ),
        (50_000, 10_000, 10_000)
    );
    assert_eq!(
        splits.test.label_counts(),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let (a, b) = (
        splits.train.label_counts(),
        splits.validation.label_counts(),
    );
    let train_and_val: Vec<i64> = a.iter().zip(b).map(|(x, y)| x + y).collect();
    assert_eq!(
        train_and_val,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    for split in [&splits.train, &splits.validation, &splits.test] {
        let (lo, hi) = split.pixel_range();
        assert_eq!(lo, 0.0);
        assert!((hi - 255.0 / 126.0).abs() < 1e-6, "max pixel {hi}");
    }
    // Validation is the *last* 10,000 of the training file: its first image is
    // training-file image 50,000.
    let raw_pixel = raw.train.images.array.data[50_000 * 784 + 300] as f64;
    assert!((splits.validation.images.double_value(&[0, 300]) - raw_pixel / 126.0).abs() < 1e-6);
}

/// Copies the fixture into `dir` as raw (gunzipped) files with `.`-naming, mutating
/// the one named `target` with `mutate`.
fn corrupted_copy(dir: &Path, target: IdxFile, mutate: impl Fn(&mut Vec<u8>)) {
    for file in IdxFile::ALL {
        let src = file.locate(&common::fixture_dir()).unwrap();
        let mut bytes = data::read_maybe_gz(&src).unwrap();
        if file == target {
            mutate(&mut bytes);
        }
        std::fs::write(dir.join(&file.candidate_names()[0]), bytes).unwrap();
    }
}

fn load_corrupted(
    target: IdxFile,
    policy: ChecksumPolicy,
    mutate: impl Fn(&mut Vec<u8>),
) -> DataError {
    let dir = tempfile::tempdir().unwrap();
    corrupted_copy(dir.path(), target, mutate);
    RawDataset::load(dir.path(), policy).expect_err("corrupt data must not load")
}

#[test]
fn every_corrupted_file_gives_a_clear_error_naming_it() {
    for target in IdxFile::ALL {
        let name = target.candidate_names()[0].clone();
        let truncated = load_corrupted(target, ChecksumPolicy::Skip, |b| b.truncate(b.len() - 7));
        assert!(
            matches!(truncated, DataError::Truncated { .. }),
            "{truncated}"
        );
        let bad_magic = load_corrupted(target, ChecksumPolicy::Skip, |b| b[0] = 0x1f);
        assert!(
            matches!(bad_magic, DataError::BadMagic { .. }),
            "{bad_magic}"
        );
        let bad_dtype = load_corrupted(target, ChecksumPolicy::Skip, |b| b[2] = 0x0d);
        assert!(
            matches!(bad_dtype, DataError::UnsupportedDtype { code: 0x0d, .. }),
            "{bad_dtype}"
        );
        for err in [truncated, bad_magic, bad_dtype] {
            assert!(
                err.to_string().contains(&name),
                "{err} does not name {name}"
            );
        }
    }
}

#[test]
fn fashion_mnist_verifies_against_its_own_checksums_and_not_mnists() {
    let dir = common::fashion_mnist_dir();
    let raw = RawDataset::load(&dir, ChecksumPolicy::Require(Dataset::FashionMnist))
        .expect("Fashion-MNIST verifies");
    let splits = Splits::from_raw(&raw, SplitSpec::PAPER).unwrap();
    assert_eq!(
        (
            splits.train.len(),
            splits.validation.len(),
            splits.test.len()
        ),
        (50_000, 10_000, 10_000)
    );
    // Fashion-MNIST's test set has exactly 1,000 images of each class (MNIST's does not).
    assert_eq!(splits.test.label_counts(), [1000; 10]);
    let (lo, hi) = splits.train.pixel_range();
    assert!(lo == 0.0 && (hi - data::INPUT_MAX).abs() < 1e-6);
    // Each dataset's files fail the other's checksums, and the error says which.
    let err = RawDataset::load(&dir, ChecksumPolicy::Require(Dataset::Mnist)).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Checksum {
                dataset: Dataset::Mnist,
                ..
            }
        ),
        "{err}"
    );
    let err = RawDataset::load(
        &common::real_mnist_dir(),
        ChecksumPolicy::Require(Dataset::FashionMnist),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("reference fashion-mnist file"),
        "{err}"
    );
    assert_eq!(
        "fashion-mnist".parse::<Dataset>(),
        Ok(Dataset::FashionMnist)
    );
    assert!(
        "fashion"
            .parse::<Dataset>()
            .unwrap_err()
            .contains("fashion-mnist")
    );
}

#[test]
fn a_flipped_byte_in_real_mnist_is_a_checksum_error() {
    let real = common::real_mnist_dir();
    let dir = tempfile::tempdir().unwrap();
    for file in IdxFile::ALL {
        let src = file.locate(&real).unwrap();
        let dst = dir.path().join(src.file_name().unwrap());
        std::fs::copy(&src, &dst).unwrap();
    }
    for target in IdxFile::ALL {
        let path = target.locate(dir.path()).unwrap();
        let original = std::fs::read(&path).unwrap();
        let mut flipped = original.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        std::fs::write(&path, &flipped).unwrap();
        let err = RawDataset::load(dir.path(), ChecksumPolicy::Require(Dataset::Mnist))
            .expect_err("flipped byte");
        match &err {
            DataError::Checksum { path: p, .. } => assert_eq!(p, &path),
            other => panic!("expected a checksum error, got {other}"),
        }
        assert!(
            err.to_string()
                .contains(target.candidate_names()[0].as_str())
        );
        std::fs::write(&path, &original).unwrap();
    }
    RawDataset::load(dir.path(), ChecksumPolicy::Require(Dataset::Mnist))
        .expect("restored copy verifies");
}

#[test]
fn labels_images_and_counts_are_validated() {
    let bad_label = load_corrupted(IdxFile::TestLabels, ChecksumPolicy::Skip, |b| {
        b[8 + 17] = 10
    });
    assert!(
        matches!(
            bad_label,
            DataError::LabelOutOfRange {
                index: 17,
                label: 10,
                ..
            }
        ),
        "{bad_label}"
    );
    // 500 test images of 28x28 re-declared as 2000 images of 14x14.
    let wrong_size = load_corrupted(IdxFile::TestImages, ChecksumPolicy::Skip, |b| {
        b[4..16].copy_from_slice(&[0, 0, 7, 208, 0, 0, 0, 14, 0, 0, 0, 14]);
    });
    assert!(
        matches!(
            wrong_size,
            DataError::WrongImageSize {
                rows: 14,
                cols: 14,
                ..
            }
        ),
        "{wrong_size}"
    );
    // A label file that claims one label fewer (and is one byte shorter).
    let mismatch = load_corrupted(IdxFile::TestLabels, ChecksumPolicy::Skip, |b| {
        b[4..8].copy_from_slice(&499u32.to_be_bytes());
        b.pop();
    });
    assert!(
        matches!(
            mismatch,
            DataError::CountMismatch {
                n_images: 500,
                n_labels: 499,
                ..
            }
        ),
        "{mismatch}"
    );
    let extra = load_corrupted(IdxFile::TrainLabels, ChecksumPolicy::Skip, |b| b.push(0));
    assert!(
        matches!(extra, DataError::TrailingBytes { actual: 1, .. }),
        "{extra}"
    );
}

#[test]
fn a_missing_file_or_bad_gzip_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = RawDataset::load(dir.path(), ChecksumPolicy::Skip).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Missing {
                name: "train-images",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("train-images.idx3-ubyte"));
    for file in IdxFile::ALL {
        let src = file.locate(&common::fixture_dir()).unwrap();
        std::fs::copy(&src, dir.path().join(src.file_name().unwrap())).unwrap();
    }
    let gz = IdxFile::TestLabels.locate(dir.path()).unwrap();
    std::fs::write(&gz, b"\x1f\x8b\x08\x00garbage").unwrap();
    let err = RawDataset::load(dir.path(), ChecksumPolicy::Skip).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    assert!(err.to_string().contains("t10k-labels-idx1-ubyte.gz"));
}

#[test]
fn both_namings_raw_or_gz_load_the_same_data() {
    let gz = RawDataset::load(&common::fixture_dir(), ChecksumPolicy::Skip).unwrap();
    let dir = tempfile::tempdir().unwrap();
    corrupted_copy(dir.path(), IdxFile::TrainImages, |_| {});
    let raw = RawDataset::load(dir.path(), ChecksumPolicy::Skip).unwrap();
    assert_eq!(gz.train.images.array, raw.train.images.array);
    assert_eq!(gz.test.labels.array, raw.test.labels.array);
    // The fixture is real MNIST: its first test labels are MNIST's.
    assert_eq!(
        &gz.test.labels.array.data[..10],
        &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    );
}

#[test]
fn too_small_a_training_file_for_the_split_is_an_error() {
    let raw = RawDataset::load(&common::fixture_dir(), ChecksumPolicy::Skip).unwrap();
    let err = Splits::from_raw(&raw, SplitSpec::PAPER).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TooFewForSplit {
                available: 2000,
                needed: 60_000,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_same_seed_gives_bitwise_identical_batches_and_other_seeds_do_not() {
    let splits = common::fixture_splits();
    let epochs = |master: u64| {
        let mut b = ShuffledBatches::new(
            SeedTree::new(master).rng("train/x/shuffle"),
            splits.train.len(),
            128,
        );
        (0..3)
            .map(|_| {
                b.next_epoch()
                    .iter()
                    .map(|idx| splits.train.select(idx).images)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let (a, b, c) = (epochs(7), epochs(7), epochs(8));
    for (ea, eb) in a.iter().zip(&b) {
        assert_eq!(ea.len(), 13);
        for (x, y) in ea.iter().zip(eb) {
            assert!(x.equal(y), "same seed, different batch");
        }
    }
    assert!(
        !a[0][0].equal(&c[0][0]),
        "different seeds gave the same first batch"
    );
    assert!(!a[0][0].equal(&a[1][0]), "two epochs gave the same order");
}

#[test]
fn an_epoch_covers_every_example_once_in_batches_of_128() {
    let mut b = ShuffledBatches::new(SeedTree::new(1).rng("s"), 1000, 128);
    let epoch = b.next_epoch();
    let sizes: Vec<i64> = epoch.iter().map(|t| t.size()[0]).collect();
    assert_eq!(sizes, [128, 128, 128, 128, 128, 128, 128, 104]);
    let mut all: Vec<i64> = epoch
        .iter()
        .flat_map(|t| Vec::<i64>::try_from(t).unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
}

#[test]
fn scaling_divides_pixels_by_126() {
    let splits = common::fixture_splits();
    let raw = RawDataset::load(&common::fixture_dir(), ChecksumPolicy::Skip).unwrap();
    let pixels = &raw.test.images.array.data[..784];
    let scaled: Vec<f32> = Vec::try_from(splits.test.images.get(0)).unwrap();
    for (p, s) in pixels.iter().zip(&scaled) {
        assert!((*p as f32 / 126.0 - s).abs() < 1e-6);
    }
    assert_eq!(splits.test.images.kind(), Kind::Float);
}

#[test]
fn make_fixture_reproduces_the_committed_fixture() {
    let raw = RawDataset::load(
        &common::real_mnist_dir(),
        ChecksumPolicy::Require(Dataset::Mnist),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    data::write_subset(&raw, dir.path(), 2000, 500).unwrap();
    for file in IdxFile::ALL {
        let name = &file.candidate_names()[2];
        let made = std::fs::read(dir.path().join(name)).unwrap();
        let committed = std::fs::read(common::fixture_dir().join(name)).unwrap();
        assert!(
            made == committed,
            "{name} differs from the committed fixture"
        );
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = data::parse_idx(&bytes, Path::new("arbitrary"));
    }

    #[test]
    fn arbitrary_headers_never_panic(dtype in any::<u8>(), ndims in any::<u8>(), rest in prop::collection::vec(any::<u8>(), 0..40)) {
        let mut bytes = vec![0, 0, dtype, ndims];
        bytes.extend(rest);
        let _ = data::parse_idx(&bytes, Path::new("arbitrary"));
    }

    #[test]
    fn a_valid_file_round_trips(array in strategies::idx_array()) {
        let bytes = data::encode_idx(&array);
        prop_assert_eq!(data::parse_idx(&bytes, Path::new("x")).unwrap(), array);
    }

    #[test]
    fn gz_files_round_trip(array in strategies::idx_array()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        gz.write_all(&data::encode_idx(&array)).unwrap();
        gz.finish().unwrap();
        let back: IdxArray = data::parse_idx(&data::read_maybe_gz(&path).unwrap(), &path).unwrap();
        prop_assert_eq!(back, array);
    }
}
