//! An exact, order-independent sum of float64 values: a fixed-point superaccumulator
//! (Kulisch's long accumulator, in the carry-save form of Neal's "superaccumulator",
//! arXiv:1505.05571) whose bit 0 is worth `2^-LSB_EXP_NEG` and whose limbs hold 32-bit
//! digits in `i64`s, so up to 2^30 additions need no carry propagation.
//!
//! Every finite `f64` with magnitude below `2^MAX_EXP` is added **exactly** when it is a
//! multiple of `2^-LSB_EXP_NEG` (every float32, every product of two float32s, every sum of
//! exps the Nyström kernel forms); bits below that are truncated toward zero, deterministically
//! per value. The sum is therefore associative and commutative: any split of the values into
//! subsets, accumulated separately and [`ExactSum::merge`]d in any order, gives the same
//! [`ExactSum::value`] bits as one pass (tested). `value` rounds the exact sum once (a
//! deterministic function of the exact sum; faithful, within one ulp).
//!
//! Infinities and NaN are remembered and make the value `inf`, `-inf` or NaN, as float64
//! addition would.

/// Limbs of 32-bit digits.
pub const LIMBS: usize = 20;
/// Bit 0 of limb 0 is worth `2^-LSB_EXP_NEG`. Products of two float32s are multiples of
/// `2^-298`.
pub const LSB_EXP_NEG: i32 = 320;
/// Values of magnitude `≥ 2^MAX_EXP` are outside the accumulator (a float32 product is
/// below `2^256`); [`ExactSum::add`] records them as overflow (the value becomes ±inf).
pub const MAX_EXP: i32 = (LIMBS as i32 - 3) * 32 - LSB_EXP_NEG + 32;
const FLUSH_EVERY: u32 = 1 << 30;

/// An exact sum (see the module documentation). `Default` is zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactSum {
    limbs: [i64; LIMBS],
    adds: u32,
    /// Bit 0: a +inf was added (or an overflow); bit 1: -inf; bit 2: NaN.
    special: u8,
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum {
            limbs: [0; LIMBS],
            adds: 0,
            special: 0,
        }
    }
}

impl ExactSum {
    /// Adds `x` exactly (see the module documentation for the range).
    #[inline]
    pub fn add(&mut self, x: f64) {
        let bits = x.to_bits();
        let biased = ((bits >> 52) & 0x7ff) as i32;
        let mut mant = bits & ((1u64 << 52) - 1);
        if biased == 0x7ff {
            self.special |= if mant != 0 {
                4
            } else if x > 0.0 {
                1
            } else {
                2
            };
            return;
        }
        if biased == 0 && mant == 0 {
            return;
        }
        // x = ±mant · 2^e
        let e = if biased == 0 {
            -1074
        } else {
            mant |= 1u64 << 52;
            biased - 1075
        };
        let mut pos = e + LSB_EXP_NEG;
        if pos < 0 {
            mant = if pos <= -64 { 0 } else { mant >> (-pos) };
            pos = 0;
        }
        let idx = (pos / 32) as usize;
        if idx + 3 > LIMBS {
            self.special |= if x > 0.0 { 1 } else { 2 };
            return;
        }
        let wide = u128::from(mant) << (pos % 32);
        let (d0, d1, d2) = (
            (wide & 0xffff_ffff) as i64,
            ((wide >> 32) & 0xffff_ffff) as i64,
            (wide >> 64) as i64,
        );
        if bits >> 63 == 0 {
            self.limbs[idx] += d0;
            self.limbs[idx + 1] += d1;
            self.limbs[idx + 2] += d2;
        } else {
            self.limbs[idx] -= d0;
            self.limbs[idx + 1] -= d1;
            self.limbs[idx + 2] -= d2;
        }
        self.adds += 1;
        if self.adds >= FLUSH_EVERY {
            self.normalize();
        }
    }

    /// Propagates carries: every limb but the top one in `[0, 2^32)`. The normalised limbs
    /// are a function of the exact sum only.
    fn normalize(&mut self) {
        let mut carry = 0i64;
        for l in self.limbs.iter_mut().take(LIMBS - 1) {
            let v = *l + carry;
            *l = v & 0xffff_ffff;
            carry = v >> 32; // arithmetic shift: floor division
        }
        self.limbs[LIMBS - 1] += carry;
        self.adds = 1;
    }

    /// Adds another accumulator (exact).
    pub fn merge(&mut self, other: &ExactSum) {
        let mut a = other.clone();
        a.normalize();
        self.normalize();
        for (s, o) in self.limbs.iter_mut().zip(&a.limbs) {
            *s += o;
        }
        self.special |= other.special;
        self.normalize();
    }

    /// The exact sum rounded once to float64 (faithfully; the bits are a function of the
    /// exact sum only).
    pub fn value(&self) -> f64 {
        match self.special {
            0 => {}
            1 => return f64::INFINITY,
            2 => return f64::NEG_INFINITY,
            _ => return f64::NAN,
        }
        let mut a = self.clone();
        a.normalize();
        let negative = a.limbs[LIMBS - 1] < 0;
        if negative {
            // Two's complement over the digits: magnitude = -(value).
            let mut carry = 0i64;
            for l in a.limbs.iter_mut() {
                let v = -*l + carry;
                *l = v & 0xffff_ffff;
                carry = v >> 32;
            }
            a.limbs[LIMBS - 1] += carry << 32;
        }
        // The top nonzero digit and the next three (≥ 96 bits) as an integer, then a
        // sticky bit for anything below, scaled by its power of two.
        let Some(top) = a.limbs.iter().rposition(|&l| l != 0) else {
            return 0.0;
        };
        let lo = top.saturating_sub(3);
        let mut int: u128 = 0;
        for i in (lo..=top).rev() {
            int = (int << 32) | (a.limbs[i] as u128 & 0xffff_ffff);
        }
        if a.limbs[..lo].iter().any(|&l| l != 0) {
            int |= 1;
        }
        // int < 2^128 exactly unless the top limb exceeds 32 bits (only after 2^30+ adds
        // of huge values); u128 -> f64 rounds to nearest.
        let mag = int as f64 * 2f64.powi(32 * lo as i32 - LSB_EXP_NEG);
        if negative {
            -mag
        } else {
            mag
        }
    }

    /// The normalised limbs, for sending (`LIMBS` values); [`ExactSum::from_limbs`] reads them.
    pub fn to_limbs(&self) -> [i64; LIMBS] {
        let mut a = self.clone();
        a.normalize();
        a.limbs
    }

    /// The special flags (`+inf`/overflow, `-inf`, NaN) as a small integer for sending.
    pub fn special(&self) -> u8 {
        self.special
    }

    /// Rebuilds an accumulator from [`ExactSum::to_limbs`] and [`ExactSum::special`].
    pub fn from_limbs(limbs: [i64; LIMBS], special: u8) -> ExactSum {
        ExactSum {
            limbs,
            adds: 1,
            special: special & 7,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn random_values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                let a = f32::from_bits((rng(&mut s) >> 32) as u32 & 0x7fff_ffff);
                let a = if a.is_finite() { a } else { 1.0 };
                // Products of float32s over a wide range of magnitudes, both signs.
                let b = (rng(&mut s) >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                let scale = 2f32.powi((rng(&mut s) % 60) as i32 - 30);
                f64::from(a.min(1e30)) * f64::from(b * scale)
            })
            .collect()
    }

    /// The reference: Shewchuk's exact expansion with CPython's correctly rounded
    /// `math.fsum` finish.
    fn fsum(values: &[f64]) -> f64 {
        // Shewchuk / Python math.fsum: partials are non-overlapping, exact.
        let mut partials: Vec<f64> = Vec::new();
        for &x in values {
            let mut x = x;
            let mut i = 0;
            for j in 0..partials.len() {
                let mut y = partials[j];
                if x.abs() < y.abs() {
                    std::mem::swap(&mut x, &mut y);
                }
                let hi = x + y;
                let lo = y - (hi - x);
                if lo != 0.0 {
                    partials[i] = lo;
                    i += 1;
                }
                x = hi;
            }
            partials.truncate(i);
            partials.push(x);
        }
        // Correct rounding of the expansion (as in CPython's fsum).
        let mut n = partials.len();
        if n == 0 {
            return 0.0;
        }
        n -= 1;
        let mut hi = partials[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = partials[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }

    #[test]
    fn matches_fsum_within_one_ulp() {
        for seed in 1..20u64 {
            let v = random_values(2000, seed);
            let mut acc = ExactSum::default();
            v.iter().for_each(|&x| acc.add(x));
            let (got, want) = (acc.value(), fsum(&v));
            let ulp = f64::EPSILON * want.abs();
            assert!(
                (got - want).abs() <= ulp,
                "seed {seed}: {got:e} vs fsum {want:e}"
            );
        }
    }

    #[test]
    fn exact_on_cancellation_and_small_cases() {
        let mut acc = ExactSum::default();
        for x in [1e20, 1.0, -1e20, 2f64.powi(-298), -0.5] {
            acc.add(x);
        }
        assert_eq!(acc.value(), 0.5 + 2f64.powi(-298));
        let mut acc = ExactSum::default();
        acc.add(-3.25);
        assert_eq!(acc.value(), -3.25);
        assert_eq!(ExactSum::default().value(), 0.0);
        let mut acc = ExactSum::default();
        acc.add(f64::INFINITY);
        acc.add(1.0);
        assert_eq!(acc.value(), f64::INFINITY);
        acc.add(f64::NEG_INFINITY);
        assert!(acc.value().is_nan());
        // Float32 sums: a float64 reference is exact for few small integers.
        let mut acc = ExactSum::default();
        (1..=1000).for_each(|i| acc.add(f64::from(i as f32) * 0.25));
        assert_eq!(acc.value(), 500500.0 * 0.25);
    }

    #[test]
    fn random_splits_merge_to_the_same_bits() {
        let v = random_values(5000, 7);
        let mut one = ExactSum::default();
        v.iter().for_each(|&x| one.add(x));
        let mut s = 99u64;
        for parts in [2usize, 3, 4, 7] {
            let mut accs = vec![ExactSum::default(); parts];
            for &x in &v {
                accs[(rng(&mut s) % parts as u64) as usize].add(x);
            }
            // Merge in a shuffled order, through the wire form.
            let mut total = ExactSum::default();
            for a in accs.iter().rev() {
                total.merge(&ExactSum::from_limbs(a.to_limbs(), a.special()));
            }
            assert_eq!(
                total.value().to_bits(),
                one.value().to_bits(),
                "{parts} parts"
            );
        }
    }
}
