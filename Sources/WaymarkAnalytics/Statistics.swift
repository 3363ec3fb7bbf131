#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The statistics behind the reports: pure functions of counts, no I/O. Every function returns nil
/// where its result is undefined (no trials, a zero standard error, …) rather than NaN or ∞, so a
/// report never shows `nan`. Checked against scipy in `StatisticsTests`.
public enum Statistics {
    /// The standard normal quantile for a two-sided 95 % interval (z₀.₉₇₅).
    public static let z95 = 1.959963984540054

    // MARK: Proportions

    /// The Wilson score interval of `successes` out of `trials` (95 % by default); nil without trials
    /// or with counts out of range. Bounds are clamped to [0, 1].
    public static func wilsonInterval(successes: Int64, trials: Int64, z: Double = z95) -> (low: Double, high: Double)? {
        guard trials > 0, successes >= 0, successes <= trials, z.isFinite, z > 0 else { return nil }
        let n = Double(trials), p = Double(successes) / n, q = 1 - p
        // The form scipy uses: (2np + z² ± z·√(z² + 4npq)) / 2(n + z²).
        let denominator = 2 * (n + z * z)
        let center = (2 * n * p + z * z) / denominator
        let half = z * (z * z + 4 * n * p * q).squareRoot() / denominator
        return (max(0, center - half), min(1, center + half))
    }

    /// `successes / trials` with its Wilson 95 % interval (rate and bounds nil without trials).
    public static func proportion(successes: Int64, trials: Int64) -> Proportion {
        let interval = wilsonInterval(successes: successes, trials: trials)
        return Proportion(successes: successes, trials: trials, rate: rate(successes, trials), low: interval?.low, high: interval?.high)
    }

    /// `numerator / denominator`, nil when the denominator is 0 (or negative).
    public static func rate(_ numerator: Int64, _ denominator: Int64) -> Double? {
        denominator > 0 ? Double(numerator) / Double(denominator) : nil
    }

    /// The result of a two-proportion z-test.
    public struct ZTest: Sendable, Hashable {
        /// (rate − reference rate) / pooled standard error: positive when the arm converts better.
        public var z: Double
        /// Two-sided.
        public var pValue: Double
    }

    /// The pooled two-proportion z-test of `successes / trials` against `referenceSuccesses /
    /// referenceTrials`, two-sided. Nil when either side has no trials or the pooled standard error is
    /// 0 (both rates 0, or both 1: nothing to compare).
    public static func twoProportionZTest(successes: Int64, trials: Int64,
                                          referenceSuccesses: Int64, referenceTrials: Int64) -> ZTest? {
        guard trials > 0, referenceTrials > 0, successes >= 0, referenceSuccesses >= 0,
              successes <= trials, referenceSuccesses <= referenceTrials else { return nil }
        let n1 = Double(trials), n2 = Double(referenceTrials)
        let p1 = Double(successes) / n1, p2 = Double(referenceSuccesses) / n2
        let pooled = Double(successes + referenceSuccesses) / (n1 + n2)
        let se = (pooled * (1 - pooled) * (1 / n1 + 1 / n2)).squareRoot()
        guard se > 0, se.isFinite else { return nil }
        let z = (p1 - p2) / se
        return ZTest(z: z, pValue: min(1, 2 * normalSurvival(abs(z))))
    }

    // MARK: Chi-squared

    /// Pearson's chi-squared test of independence of a k × 2 table (per arm: successes and failures,
    /// given as successes and trials), without continuity correction, df = k − 1. Nil with fewer than
    /// two rows, a row without trials, or a column that is all zero (every trial a success, or none):
    /// expected counts of 0 leave the statistic undefined.
    public static func chiSquaredIndependence(_ rows: [(successes: Int64, trials: Int64)]) -> ChiSquared? {
        guard rows.count >= 2 else { return nil }
        var total = 0.0, totalSuccesses = 0.0
        for row in rows {
            guard row.trials > 0, row.successes >= 0, row.successes <= row.trials else { return nil }
            total += Double(row.trials); totalSuccesses += Double(row.successes)
        }
        let totalFailures = total - totalSuccesses
        guard totalSuccesses > 0, totalFailures > 0 else { return nil }
        var statistic = 0.0
        for row in rows {
            let n = Double(row.trials), s = Double(row.successes)
            let expectedSuccesses = n * totalSuccesses / total, expectedFailures = n * totalFailures / total
            statistic += (s - expectedSuccesses) * (s - expectedSuccesses) / expectedSuccesses
            statistic += ((n - s) - expectedFailures) * ((n - s) - expectedFailures) / expectedFailures
        }
        let df = rows.count - 1
        guard let p = chiSquaredSurvival(statistic, degreesOfFreedom: df) else { return nil }
        return ChiSquared(statistic: statistic, degreesOfFreedom: df, pValue: p)
    }

    /// P(X ≥ x) for X ~ χ²(df): Q(df/2, x/2). Nil for df < 1 or a negative / non-finite x.
    public static func chiSquaredSurvival(_ x: Double, degreesOfFreedom df: Int) -> Double? {
        guard df >= 1 else { return nil }
        return regularizedGammaQ(Double(df) / 2, x / 2)
    }

    /// The regularized upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a), for a > 0, x ≥ 0:
    /// the series for P below x = a + 1, the continued fraction (modified Lentz) above it, as in
    /// Numerical Recipes (`gammq`), to about 1e-15 relative. Nil outside its domain.
    public static func regularizedGammaQ(_ a: Double, _ x: Double) -> Double? {
        guard a > 0, a.isFinite, x >= 0, !x.isNaN else { return nil }
        if x == 0 { return 1 }
        if x == .infinity { return 0 }
        if x < a + 1 { return max(0, 1 - gammaSeries(a, x)) }
        return min(1, gammaContinuedFraction(a, x))
    }

    /// The regularized lower incomplete gamma function P(a, x) = 1 − Q(a, x).
    public static func regularizedGammaP(_ a: Double, _ x: Double) -> Double? {
        guard a > 0, a.isFinite, x >= 0, !x.isNaN else { return nil }
        if x == 0 { return 0 }
        if x == .infinity { return 1 }
        if x < a + 1 { return min(1, gammaSeries(a, x)) }
        return max(0, 1 - gammaContinuedFraction(a, x))
    }

    private static let gammaEpsilon = 1e-16
    private static let gammaMaxIterations = 100_000
    private static let tiny = Double.leastNormalMagnitude / Double.ulpOfOne

    /// e^(−x) x^a / Γ(a), computed in logarithms.
    private static func gammaPrefactor(_ a: Double, _ x: Double) -> Double {
        exp(-x + a * log(x) - lgamma(a))
    }

    /// P(a, x) by its series: e^(−x) x^a / Γ(a) · Σ xⁿ / (a (a+1) … (a+n)).
    private static func gammaSeries(_ a: Double, _ x: Double) -> Double {
        var ap = a, term = 1 / a, sum = term
        for _ in 0..<gammaMaxIterations {
            ap += 1
            term *= x / ap
            sum += term
            if abs(term) < abs(sum) * gammaEpsilon { break }
        }
        return sum * gammaPrefactor(a, x)
    }

    /// Q(a, x) by its continued fraction, evaluated with the modified Lentz method.
    private static func gammaContinuedFraction(_ a: Double, _ x: Double) -> Double {
        var b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d
        for i in 1...gammaMaxIterations {
            let an = -Double(i) * (Double(i) - a)
            b += 2
            d = an * d + b
            if abs(d) < tiny { d = tiny }
            c = b + an / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            let delta = d * c
            h *= delta
            if abs(delta - 1) < gammaEpsilon { break }
        }
        return gammaPrefactor(a, x) * h
    }

    // MARK: Normal distribution

    /// P(Z ≥ z) for a standard normal Z.
    public static func normalSurvival(_ z: Double) -> Double {
        0.5 * erfc(z / 2.0.squareRoot())
    }

    /// The standard normal quantile Φ⁻¹(p) for 0 < p < 1 (Acklam's approximation refined by one
    /// Halley step, to about 1e-15); nil outside (0, 1).
    public static func normalQuantile(_ p: Double) -> Double? {
        guard p > 0, p < 1 else { return nil }
        // The upper half by symmetry: 1 − p is exact there, and Φ(x) − p near 1 would cancel.
        return p > 0.5 ? -lowerNormalQuantile(1 - p) : lowerNormalQuantile(p)
    }

    /// Φ⁻¹(p) for 0 < p ≤ 0.5.
    private static func lowerNormalQuantile(_ p: Double) -> Double {
        let a = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
                 -3.066479806614716e+01, 2.506628277459239e+00]
        let b = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
                 -1.328068155288572e+01]
        let c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
                 4.374664141464968e+00, 2.938163982698783e+00]
        let d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00]
        let low = 0.02425
        var x: Double
        if p < low {
            let q = (-2 * log(p)).squareRoot()
            x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        } else {
            let q = p - 0.5, r = q * q
            x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
                / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
        }
        // Halley refinement: e = Φ(x) − p, Φ(x) = erfc(−x/√2)/2 (x ≤ 0: no cancellation).
        let e = 0.5 * erfc(-x / 2.0.squareRoot()) - p
        let u = e * (2 * Double.pi).squareRoot() * exp(x * x / 2)
        x -= u / (1 + x * u / 2)
        return x
    }

    // MARK: Sample size

    /// Instances needed in each of two equal arms to detect the difference between `rate` and
    /// `referenceRate` with a two-sided test at `alpha` and the given `power` (normal approximation,
    /// no continuity correction): n = (z₁₋α/₂ √(2 p̄ q̄) + z₁₋β √(p₁q₁ + p₂q₂))² / (p₁ − p₂)².
    /// Not rounded. Nil when the rates are equal or out of [0, 1].
    public static func sampleSizePerArm(rate: Double, referenceRate: Double, alpha: Double = 0.05, power: Double = 0.8) -> Double? {
        guard (0...1).contains(rate), (0...1).contains(referenceRate), rate != referenceRate,
              let zAlpha = normalQuantile(1 - alpha / 2), let zBeta = normalQuantile(power) else { return nil }
        let mean = (rate + referenceRate) / 2
        let spread = rate * (1 - rate) + referenceRate * (1 - referenceRate)
        let numerator = zAlpha * (2 * mean * (1 - mean)).squareRoot() + zBeta * spread.squareRoot()
        let difference = rate - referenceRate
        return numerator * numerator / (difference * difference)
    }

    // MARK: Time to convert

    /// The `percent` percentile (0 < percent ≤ 100, nearest rank) of a ``TimeToConvert`` histogram
    /// (counts per bucket index) in milliseconds: the bucket's upper bound, or for the open last bucket
    /// its lower bound. Nil for an empty histogram or a percent out of range.
    public static func percentile(_ percent: Double, histogram: [Int64]) -> Double? {
        guard percent > 0, percent <= 100 else { return nil }
        let total = histogram.reduce(0) { $0 + max(0, $1) }
        guard total > 0 else { return nil }
        // Nearest rank ⌈percent/100 · n⌉, forgiving the binary rounding of 0.9 · 10 = 9.000…02.
        let exact = percent / 100 * Double(total)
        var rank = exact.rounded(.up)
        if rank - exact > 1 - 1e-9 { rank -= 1 }
        let target = max(1, min(total, Int64(rank)))
        var cumulative: Int64 = 0
        for (bucket, count) in histogram.enumerated() where count > 0 {
            cumulative += count
            if cumulative >= target { return bucketValue(bucket) }
        }
        return bucketValue(histogram.count - 1)
    }

    /// p50, p90 and p99 of a ``TimeToConvert`` histogram; nil when it is empty.
    public static func percentiles(histogram: [Int64]) -> Percentiles? {
        let count = histogram.reduce(0) { $0 + max(0, $1) }
        guard count > 0, let p50 = percentile(50, histogram: histogram), let p90 = percentile(90, histogram: histogram),
              let p99 = percentile(99, histogram: histogram) else { return nil }
        return Percentiles(count: count, p50: p50, p90: p90, p99: p99)
    }

    /// The value a percentile in `bucket` reads as (milliseconds).
    public static func bucketValue(_ bucket: Int) -> Double {
        let last = TimeToConvert.bucketCount - 1
        return bucket >= last ? TimeToConvert.upperBound(last - 1) : TimeToConvert.upperBound(max(0, bucket))
    }
}
