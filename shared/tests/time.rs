//! Time intervals against hand-computed examples (docs/MODELS.md §2.2–2.3, pitfalls 23–24).

use sasrec_shared::time::{left_pad, time_codes, Intervals, TimeUnit};

#[test]
fn personal_codes_scale_by_min_gap_with_ties_to_even() {
    // gaps 10, 0 (equal timestamps), 25, 5 → min non-zero gap 5.
    let ts = [100, 110, 110, 135, 140];
    // (t - 100)/5 = 0, 2, 2, 7, 8 → +1
    assert_eq!(time_codes(TimeUnit::Personal, &ts), vec![1, 3, 3, 8, 9]);
    // min gap 2: (t-0)/2 = 0, 1, 2.5 → 2 (even), 3.5 → 4 (even)
    let ts = [0, 2, 5, 7];
    assert_eq!(time_codes(TimeUnit::Personal, &ts), vec![1, 2, 3, 5]);
    // all equal: scale 1, codes all 1
    assert_eq!(time_codes(TimeUnit::Personal, &[9, 9, 9]), vec![1, 1, 1]);
    // absolute units keep raw seconds
    assert_eq!(time_codes(TimeUnit::Hour, &[5, 7]), vec![5, 7]);
    assert!(time_codes(TimeUnit::Personal, &[]).is_empty());
}

#[test]
fn personal_relation_matrix_matches_reference_with_padding_and_clipping() {
    let iv = Intervals {
        unit: TimeUnit::Personal,
        span: 4,
    };
    // window T = 4: one padding position, then codes 1, 3, 9.
    let codes = [0, 1, 3, 9];
    let mut out = vec![-1; 16];
    iv.relation_matrix(&codes, 1, &mut out);
    #[rustfmt::skip]
    let want = [
        0, 1, 3, 4, // padding row: |0 - c_j| clipped at 4 (reference convention)
        1, 0, 2, 4, // |1-9| = 8 → 4
        3, 2, 0, 4,
        4, 4, 4, 0,
    ];
    assert_eq!(out, want);
}

#[test]
fn absolute_units_floor_clip_and_zero_padding() {
    let iv = Intervals {
        unit: TimeUnit::Hour,
        span: 3,
    };
    let t0 = 1_000_000;
    let codes = [0, 0, t0, t0 + 3599, t0 + 7200, t0 + 86_400];
    let mut out = vec![-1; 36];
    iv.relation_matrix(&codes, 2, &mut out);
    let row = |i: usize| out[i * 6..(i + 1) * 6].to_vec();
    assert_eq!(row(0), vec![0; 6]);
    assert_eq!(row(1), vec![0; 6]);
    assert_eq!(row(2), vec![0, 0, 0, 0, 2, 3]);
    assert_eq!(row(3), vec![0, 0, 0, 0, 1, 3]);
    assert_eq!(row(4), vec![0, 0, 2, 1, 0, 3]);
    for (unit, secs) in [
        (TimeUnit::Second, 1),
        (TimeUnit::Minute, 60),
        (TimeUnit::Day, 86_400),
    ] {
        let iv = Intervals { unit, span: 1000 };
        assert_eq!(iv.bucket(0, 5 * secs + secs - 1, false, false), 5, "{unit}");
    }
}

#[test]
fn equal_timestamps_give_zero_interval() {
    let iv = Intervals {
        unit: TimeUnit::Personal,
        span: 256,
    };
    let codes = time_codes(TimeUnit::Personal, &[50, 50, 80]);
    assert_eq!(codes, vec![1, 1, 2]);
    let mut out = vec![-1; 9];
    iv.relation_matrix(&codes, 0, &mut out);
    assert_eq!(out, vec![0, 0, 1, 0, 0, 1, 1, 1, 0]);
}

#[test]
fn left_pad_keeps_the_newest_items() {
    let mut out = [9i64; 4];
    assert_eq!(left_pad(&[1u32, 2], 0i64, &mut out), 2);
    assert_eq!(out, [0, 0, 1, 2]);
    assert_eq!(left_pad(&[1u32, 2, 3, 4, 5, 6], 0i64, &mut out), 0);
    assert_eq!(out, [3, 4, 5, 6]);
    assert_eq!(left_pad::<u32, i64>(&[], 0, &mut out), 4);
    assert_eq!(out, [0; 4]);
}

#[test]
fn unit_names_parse_and_reject() {
    assert_eq!("personal".parse::<TimeUnit>().unwrap(), TimeUnit::Personal);
    assert_eq!("day".parse::<TimeUnit>().unwrap().seconds(), Some(86_400));
    let e = "week".parse::<TimeUnit>().unwrap_err().to_string();
    assert_eq!(
        e,
        "--time_unit `week`: expected personal, second, minute, hour or day"
    );
}
