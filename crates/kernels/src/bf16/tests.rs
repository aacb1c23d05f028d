//! Every path this CPU runs against an f64 triple loop, input rounding, and forced paths.

use super::*;

/// Values in [-1, 1), already bf16, from a xorshift stream.
fn bf16_values(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            from_bf16(to_bf16((state as f32 / u32::MAX as f32) * 2.0 - 1.0))
        })
        .collect()
}

#[test]
fn every_runnable_path_equals_an_f64_triple_loop_for_every_edge_and_both_packings() {
    let paths = Path::runnable();
    assert!(paths.contains(&Path::Portable));
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        assert!(paths.contains(&Path::Avx2));
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
        assert!(paths.contains(&Path::Avx512Bf16));
    }
    #[cfg(target_arch = "aarch64")]
    assert!(paths.contains(&Path::Neon), "every aarch64 has NEON");
    println!("paths run here: {}", names(&paths));
    // Partial panels and register tiles in every dimension, one row, 6k±1 rows past the
    // row chunk, the team/rayon switch at 32 rows, and an LM-head-like width.
    let shapes = [(1, 1, 1), (37, 70, 53), (33, 64, 32), (64, 96, 1000), (5, 3072, 17), (16, 33, 48), (8, 70, 53), (3, 96, 1000), (49, 20, 15), (32, 7, 16)];
    for path in paths {
        for (m, k, n) in shapes {
            let x = bf16_values(m * k, 1 + m as u32);
            let w = bf16_values(k * n, 7 + n as u32); // [k, n] row-major
            let w_t: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect(); // [n, k]
            let want: Vec<f64> = (0..m * n).map(|e| (0..k).map(|l| x[e / n * k + l] as f64 * w[l * n + e % n] as f64).sum()).collect();
            // Inputs are exact in bf16 and so are their products: only the f32 sums round.
            let tolerance = 2.0 * f32::EPSILON as f64 * k as f64;
            for (layout, packed) in [("row-major", PackedBf16::pack_for(path, &w, k, n, n, 1)), ("transposed", PackedBf16::pack_for(path, &w_t, k, n, 1, k))] {
                assert_eq!(packed.dims(), [k, n]);
                assert_eq!(packed.path(), path);
                assert_eq!(packed.get(k - 1, n - 1), w[(k - 1) * n + n - 1]);
                assert_eq!(packed.get(0, n / 2), w[n / 2]);
                let got = matmul(&x, m, k, &packed);
                assert_eq!(got.len(), m * n);
                for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((*g as f64 - w).abs() <= tolerance, "{path:?} [{m}, {k}, {n}] {layout}: element {e}: {g} against {w}");
                }
            }
        }
    }
}

#[test]
fn every_path_rounds_the_inputs_to_bf16_first() {
    for path in Path::runnable() {
        let x = [1.0 + 2f32.powi(-9), 3.0]; // rounds to 1.0
        let packed = PackedBf16::pack_for(path, &[1.0, 0.1], 2, 1, 1, 1);
        assert_eq!(matmul(&x, 1, 2, &packed)[0], 1.0 + 3.0 * from_bf16(to_bf16(0.1)), "{path:?}");
    }
}

#[test]
fn the_cpu_vendor_is_read_from_cpuid() {
    #[cfg(target_arch = "x86_64")]
    {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if let Some(line) = cpuinfo.lines().find(|l| l.starts_with("vendor_id")) {
            assert_eq!(cpu_is_amd(), line.ends_with("AuthenticAMD"), "{line}");
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    assert!(!cpu_is_amd());
}

#[test]
fn a_forced_path_is_taken_or_refused_by_name() {
    assert_eq!(choose(Some("portable")), Ok(Path::Portable));
    assert_eq!(choose(Some(" Portable ")), Ok(Path::Portable));
    assert_eq!(choose(Some("tiles")), Err(PathError::Unknown("tiles".into())));
    assert!(PathError::Unknown("tiles".into()).to_string().contains("PREFIX_TUNE_BF16_PATH=\"tiles\""));
    for path in Path::ALL {
        match choose(Some(path.name())) {
            Ok(chosen) => assert!(chosen == path && path.runs_here()),
            Err(why) => {
                assert!(!path.runs_here() && why == PathError::Unsupported(path));
                assert!(why.to_string().contains(path.needs()), "{why}");
            }
        }
    }
    // Unforced: the fastest path this CPU runs, never the check loops, and `vdpbf16ps` only
    // on AMD.
    let default = choose(None);
    let fastest = Path::ALL.into_iter().find(|p| p.runs_here() && *p != Path::Portable && (*p != Path::Avx512Bf16 || cpu_is_amd()));
    assert_eq!(default.ok(), fastest);
    assert_eq!(choose(Some("")).ok(), fastest, "an empty variable forces nothing");
}
