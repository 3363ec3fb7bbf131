import Foundation
import Testing
import WaymarkAnalytics
import WaymarkEngine

/// The report statistics against textbook values and, for ~200 seeded random cases each, against
/// scipy (installed by `make setup` into `.venv-deploy/stats`; the test fails without it).
@Suite("Statistics")
struct StatisticsTests {
    // MARK: Textbook values

    @Test("Wilson intervals of textbook examples")
    func wilsonTextbook() throws {
        let zero = try #require(Statistics.wilsonInterval(successes: 0, trials: 10))
        #expect(zero.low == 0 && abs(zero.high - 0.27753279) < 1e-7)
        let half = try #require(Statistics.wilsonInterval(successes: 5, trials: 10))
        #expect(abs(half.low - 0.23659309) < 1e-7 && abs(half.high - 0.76340691) < 1e-7)
        let all = try #require(Statistics.wilsonInterval(successes: 20, trials: 20))
        #expect(all.high == 1 && abs(all.low - 0.83887484) < 1e-7)
        #expect(Statistics.wilsonInterval(successes: 0, trials: 0) == nil)
        #expect(Statistics.wilsonInterval(successes: 3, trials: 2) == nil)
        let p = Statistics.proportion(successes: 0, trials: 0)
        #expect(p.rate == nil && p.low == nil && p.high == nil)
    }

    @Test("two-proportion z-test, chi-squared and normal quantiles of textbook examples")
    func testsTextbook() throws {
        // 52 % vs 48 % of 1,000 each: pooled p = 0.5, z = 0.04 / √(0.25 · 0.002) = 1.78885.
        let z = try #require(Statistics.twoProportionZTest(successes: 520, trials: 1000, referenceSuccesses: 480, referenceTrials: 1000))
        #expect(abs(z.z - 1.7888543819998317) < 1e-12 && abs(z.pValue - 0.0736382701) < 1e-9)
        // Identical arms: z = 0, p = 1; nothing to compare: nil.
        let same = try #require(Statistics.twoProportionZTest(successes: 30, trials: 100, referenceSuccesses: 300, referenceTrials: 1000))
        #expect(same.z == 0 && same.pValue == 1)
        #expect(Statistics.twoProportionZTest(successes: 0, trials: 100, referenceSuccesses: 0, referenceTrials: 50) == nil)
        #expect(Statistics.twoProportionZTest(successes: 10, trials: 10, referenceSuccesses: 5, referenceTrials: 5) == nil)
        #expect(Statistics.twoProportionZTest(successes: 0, trials: 0, referenceSuccesses: 5, referenceTrials: 50) == nil)

        // Critical values: P(χ²₁ ≥ 3.841459) = P(χ²₂ ≥ 5.991465) = 0.05, P(χ²₁₀ ≥ 18.307038) = 0.05.
        #expect(abs(Statistics.chiSquaredSurvival(3.841458820694124, degreesOfFreedom: 1)! - 0.05) < 1e-12)
        #expect(abs(Statistics.chiSquaredSurvival(5.991464547107979, degreesOfFreedom: 2)! - 0.05) < 1e-12)
        #expect(abs(Statistics.chiSquaredSurvival(18.307038053275146, degreesOfFreedom: 10)! - 0.05) < 1e-12)
        #expect(Statistics.chiSquaredSurvival(0, degreesOfFreedom: 3) == 1)
        #expect(abs(Statistics.regularizedGammaQ(1, 2)! - exp(-2)) < 1e-15)
        // A 2 × 2 table: chi-squared = z², same p-value.
        let chi = try #require(Statistics.chiSquaredIndependence([(520, 1000), (480, 1000)]))
        #expect(chi.degreesOfFreedom == 1 && abs(chi.statistic - z.z * z.z) < 1e-10 && abs(chi.pValue - z.pValue) < 1e-12)
        #expect(Statistics.chiSquaredIndependence([(5, 10)]) == nil)
        #expect(Statistics.chiSquaredIndependence([(0, 10), (0, 20)]) == nil)
        #expect(Statistics.chiSquaredIndependence([(5, 10), (0, 0)]) == nil)

        #expect(abs(Statistics.normalQuantile(0.975)! - 1.959963984540054) < 1e-14)
        #expect(abs(Statistics.normalQuantile(0.8)! - 0.8416212335729143) < 1e-14)
        #expect(Statistics.normalQuantile(0) == nil && Statistics.normalQuantile(1) == nil)
    }

    @Test("sample size per arm: 5 % vs 10 % needs 435 per arm (Fleiss, no continuity correction)")
    func sampleSizeTextbook() throws {
        let n = try #require(Statistics.sampleSizePerArm(rate: 0.10, referenceRate: 0.05))
        #expect(n.rounded(.up) == 435)
        #expect(Statistics.sampleSizePerArm(rate: 0.1, referenceRate: 0.1) == nil)
        #expect(Statistics.sampleSizePerArm(rate: 1.5, referenceRate: 0.1) == nil)
        #expect(Statistics.sampleSizePerArm(rate: 1, referenceRate: 0)! > 0)
    }

    @Test("time-to-convert percentiles read bucket upper bounds (lower bound for the open last bucket)")
    func percentiles() throws {
        var histogram = [Int64](repeating: 0, count: TimeToConvert.bucketCount)
        histogram[3] = 9; histogram[10] = 1
        let p = try #require(Statistics.percentiles(histogram: histogram))
        #expect(p.count == 10 && p.p50 == TimeToConvert.upperBound(3))
        // 0.9 · 10 is 9.000…02 in binary: the 9th value is still p90.
        #expect(p.p90 == TimeToConvert.upperBound(3) && p.p99 == TimeToConvert.upperBound(10))
        #expect(abs(p.p50 - 60_000 * 2.0.squareRoot() * 2) < 1e-6)
        histogram = [Int64](repeating: 0, count: TimeToConvert.bucketCount)
        histogram[TimeToConvert.bucketCount - 1] = 4
        #expect(Statistics.percentile(50, histogram: histogram) == TimeToConvert.upperBound(TimeToConvert.bucketCount - 2))
        #expect(Statistics.percentiles(histogram: [Int64](repeating: 0, count: 36)) == nil)
        histogram = [Int64](repeating: 0, count: TimeToConvert.bucketCount)
        histogram[0] = 1
        #expect(Statistics.percentile(99, histogram: histogram) == 60_000)
    }

    // MARK: Against scipy

    struct Cases: Codable {
        var wilson: [[Int64]] = []
        var ztest: [[Int64]] = []
        var chi2: [[[Int64]]] = []
        var gamma: [[Double]] = []
        var sample: [[Double]] = []
        var ppf: [Double] = []
        var percentile: [PercentileCase] = []
    }

    struct PercentileCase: Codable {
        var percent: Double
        var counts: [Int64]
    }

    struct Reference: Decodable {
        var wilson: [[Double]?]
        var ztest: [[Double]?]
        var ztestChi2: [Double?]
        var chi2: [[Double]?]
        var gamma: [Double?]
        var sample: [Double?]
        var ppf: [Double]
        var percentile: [Double?]
        var versions: String
    }

    static let script = #"""
    import json, math, sys
    from fractions import Fraction
    import numpy as np
    import scipy
    from scipy import special, stats

    cases = json.load(open(sys.argv[1]))
    out = {"versions": "scipy %s, numpy %s" % (scipy.__version__, np.__version__)}

    def wilson(k, n):
        if n <= 0 or k < 0 or k > n:
            return None
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        return [max(0.0, float(ci.low)), min(1.0, float(ci.high))]
    out["wilson"] = [wilson(k, n) for k, n in cases["wilson"]]

    def ztest(x1, n1, x2, n2):
        if n1 <= 0 or n2 <= 0:
            return None
        pooled = (x1 + x2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        if se == 0:
            return None
        z = (x1 / n1 - x2 / n2) / se
        return [z, float(2 * stats.norm.sf(abs(z)))]
    out["ztest"] = [ztest(*c) for c in cases["ztest"]]

    def contingency(rows):
        table = [[s, t - s] for s, t in rows]
        try:
            r = stats.chi2_contingency(np.array(table, dtype=float), correction=False)
        except ValueError:
            return None
        if not math.isfinite(r[0]) or not math.isfinite(r[1]):
            return None
        return [float(r[0]), float(r[2]), float(r[1])]
    out["ztestChi2"] = [None if (r := contingency([[c[0], c[1]], [c[2], c[3]]])) is None else r[2] for c in cases["ztest"]]
    out["chi2"] = [contingency(rows) for rows in cases["chi2"]]
    out["gamma"] = [float(special.gammaincc(a, x)) for a, x in cases["gamma"]]

    za, zb = stats.norm.ppf(0.975), stats.norm.ppf(0.8)
    def sample(p1, p2):
        if p1 == p2:
            return None
        pbar = (p1 + p2) / 2
        num = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
        return num * num / (p1 - p2) ** 2
    out["sample"] = [sample(p1, p2) for p1, p2 in cases["sample"]]
    out["ppf"] = [float(stats.norm.ppf(p)) for p in cases["ppf"]]

    def bound(i, count):
        if i == count - 1:
            i -= 1
        return 60000.0 * 2 ** (i / 2)
    def percentile(case):
        counts = np.array(case["counts"], dtype=np.int64)
        total = int(counts.sum())
        if total == 0:
            return None
        rank = max(1, math.ceil(Fraction(str(case["percent"])) * total / 100))
        i = int(np.searchsorted(np.cumsum(counts), rank, side="left"))
        return bound(i, len(counts))
    out["percentile"] = [percentile(c) for c in cases["percentile"]]
    json.dump(out, open(sys.argv[2], "w"), allow_nan=False)
    """#

    /// SplitMix64: the cases are the same on every run.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Trial counts from empty to millions, often tiny.
    static func trials(_ g: inout Generator) -> Int64 {
        [0, 1, 2, 5, 10, 37, 100, 1_000, 25_000, 5_000_000, Int64.random(in: 0...200, using: &g),
         Int64.random(in: 0...50_000, using: &g), Int64.random(in: 100...2_000_000, using: &g)].randomElement(using: &g)!
    }

    /// Successes out of `n`: none, all, or around a random rate.
    static func successes(_ n: Int64, rate: Double, _ g: inout Generator) -> Int64 {
        guard n > 0 else { return 0 }
        switch Int.random(in: 0..<10, using: &g) {
        case 0: return 0
        case 1: return n
        default:
            let jitter = Double.random(in: 0.9...1.1, using: &g)
            return min(n, max(0, Int64((Double(n) * rate * jitter).rounded())))
        }
    }

    static func makeCases() -> Cases {
        var g = Generator(state: 20_261_207)
        var c = Cases()
        for _ in 0..<200 {
            let n = trials(&g)
            c.wilson.append([successes(n, rate: Double.random(in: 0...1, using: &g), &g), n])
        }
        for i in 0..<200 {
            let n1 = trials(&g), n2 = i % 5 == 0 ? n1 : trials(&g)
            let rate = [0.001, 0.02, 0.1, 0.5, 0.97, Double.random(in: 0...1, using: &g)].randomElement(using: &g)!
            let x1 = successes(n1, rate: rate, &g)
            // Every tenth pair is identical: z = 0, p = 1.
            c.ztest.append(i % 10 == 0 ? [x1, n1, x1, n1] : [x1, n1, successes(n2, rate: rate, &g), n2])
        }
        for _ in 0..<200 {
            let k = Int.random(in: 2...6, using: &g)
            let rate = [0.005, 0.05, 0.3, Double.random(in: 0...1, using: &g)].randomElement(using: &g)!
            c.chi2.append((0..<k).map { _ in
                let n = trials(&g)
                return [successes(n, rate: rate, &g), n]
            })
        }
        for a in [0.5, 1, 1.5, 2, 2.5, 3.5, 5, 10, 25.5, 50, 100] {
            c.gamma.append([a, 0]); c.gamma.append([a, 1e-8]); c.gamma.append([a, a + 1]); c.gamma.append([a, 600])
            for _ in 0..<14 { c.gamma.append([a, Double.random(in: 0...(3 * a + 40), using: &g)]) }
        }
        for _ in 0..<200 {
            let p1 = [0, 1, 0.5, Double.random(in: 0...1, using: &g), Double.random(in: 0...0.1, using: &g)].randomElement(using: &g)!
            let p2 = Int.random(in: 0..<8, using: &g) == 0 ? p1 : min(1, max(0, p1 + Double.random(in: -0.05...0.05, using: &g)))
            c.sample.append([p1, p2])
        }
        c.ppf = [1e-12, 1e-6, 0.001, 0.02, 0.02425, 0.1, 0.5, 0.8, 0.9, 0.975, 0.99, 0.999999] + (0..<40).map { _ in Double.random(in: 0.0001...0.9999, using: &g) }
        for _ in 0..<200 {
            var counts = [Int64](repeating: 0, count: TimeToConvert.bucketCount)
            let filled = Int.random(in: 0...6, using: &g)
            for _ in 0..<filled { counts[Int.random(in: 0..<counts.count, using: &g)] += [1, 3, 10, Int64.random(in: 1...100_000, using: &g)].randomElement(using: &g)! }
            c.percentile.append(PercentileCase(percent: [0.1, 25, 50, 75, 90, 99, 99.9, 100, 33.3].randomElement(using: &g)!, counts: counts))
        }
        return c
    }

    static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// Runs the scipy script over `cases`.
    static func reference(_ cases: Cases) throws -> Reference {
        let python = repoRoot.appendingPathComponent(".venv-deploy/stats/bin/python").path
        try #require(FileManager.default.isExecutableFile(atPath: python),
                     "\(python) is missing: run `make setup` (deploy/scripts/setup.sh installs scipy there) to check the statistics against scipy")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("waymark-stats-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let input = directory.appendingPathComponent("cases.json"), output = directory.appendingPathComponent("reference.json")
        try JSONEncoder().encode(cases).write(to: input)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", script, input.path, output.path]
        let stderr = Pipe()
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let errors = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0,
                     "the scipy reference failed (run `make setup` if scipy is missing): \(String(decoding: errors, as: UTF8.self))")
        return try JSONDecoder().decode(Reference.self, from: Data(contentsOf: output))
    }

    static func close(_ a: Double?, _ b: Double?, relative: Double = 1e-9, absolute: Double = 1e-12) -> Bool {
        guard let a, let b else { return a == nil && b == nil }
        return abs(a - b) <= absolute + relative * max(abs(a), abs(b))
    }

    /// p-values: 1e-9 relative above 1e-12, 1e-6 relative down to 1e-300, below that both negligible.
    static func closeP(_ ours: Double?, _ reference: Double?) -> Bool {
        guard let ours, let reference else { return ours == nil && reference == nil }
        if reference > 1e-12 { return abs(ours - reference) <= 1e-9 * reference }
        if reference > 1e-300 { return abs(ours - reference) <= 1e-6 * reference }
        return ours < 1e-290
    }

    @Test("Wilson, z-test, chi-squared, incomplete gamma, sample size, quantiles and percentiles agree with scipy")
    func againstScipy() throws {
        let cases = Self.makeCases()
        let ref = try Self.reference(cases)
        #expect(cases.wilson.count >= 200 && cases.ztest.count >= 200 && cases.chi2.count >= 200)

        var defined = 0
        for (c, expected) in zip(cases.wilson, ref.wilson) {
            let ours = Statistics.wilsonInterval(successes: c[0], trials: c[1])
            #expect((ours == nil) == (expected == nil), "Wilson \(c)")
            guard let ours, let expected else { continue }
            defined += 1
            #expect(Self.close(ours.low, expected[0]) && Self.close(ours.high, expected[1]),
                    "Wilson \(c[0])/\(c[1]): \(ours) vs scipy \(expected)")
            #expect(ours.low.isFinite && ours.high.isFinite && ours.low <= ours.high)
        }
        #expect(defined > 150)

        defined = 0
        for ((c, expected), chi) in zip(zip(cases.ztest, ref.ztest), ref.ztestChi2) {
            let ours = Statistics.twoProportionZTest(successes: c[0], trials: c[1], referenceSuccesses: c[2], referenceTrials: c[3])
            #expect((ours == nil) == (expected == nil), "z-test \(c): \(String(describing: ours)) vs \(String(describing: expected))")
            guard let ours, let expected else { continue }
            defined += 1
            #expect(Self.close(ours.z, expected[0]), "z of \(c): \(ours.z) vs \(expected[0])")
            #expect(Self.closeP(ours.pValue, expected[1]), "p of \(c): \(ours.pValue) vs norm.sf \(expected[1])")
            // The pooled z-test is the 2 × 2 chi-squared test: scipy's chi2_contingency must agree too.
            #expect(Self.closeP(ours.pValue, chi), "p of \(c): \(ours.pValue) vs chi2_contingency \(String(describing: chi))")
        }
        #expect(defined > 120)

        defined = 0
        for (rows, expected) in zip(cases.chi2, ref.chi2) {
            let ours = Statistics.chiSquaredIndependence(rows.map { ($0[0], $0[1]) })
            #expect((ours == nil) == (expected == nil), "chi-squared \(rows): \(String(describing: ours)) vs \(String(describing: expected))")
            guard let ours, let expected else { continue }
            defined += 1
            #expect(Self.close(ours.statistic, expected[0]) && ours.degreesOfFreedom == Int(expected[1]),
                    "chi-squared \(rows): \(ours) vs scipy \(expected)")
            #expect(Self.closeP(ours.pValue, expected[2]), "chi-squared p \(rows): \(ours.pValue) vs scipy \(expected[2])")
        }
        #expect(defined > 50)

        for (c, expected) in zip(cases.gamma, ref.gamma) {
            #expect(Self.closeP(Statistics.regularizedGammaQ(c[0], c[1]), expected), "Q(\(c[0]), \(c[1])) vs gammaincc \(String(describing: expected))")
        }
        for (c, expected) in zip(cases.sample, ref.sample) {
            let ours = Statistics.sampleSizePerArm(rate: c[0], referenceRate: c[1])
            #expect(Self.close(ours, expected), "sample size \(c): \(String(describing: ours)) vs \(String(describing: expected))")
        }
        for (p, expected) in zip(cases.ppf, ref.ppf) {
            #expect(Self.close(Statistics.normalQuantile(p), expected, relative: 1e-12), "Φ⁻¹(\(p))")
        }
        for (c, expected) in zip(cases.percentile, ref.percentile) {
            let ours = Statistics.percentile(c.percent, histogram: c.counts)
            #expect(Self.close(ours, expected, relative: 1e-12), "p\(c.percent) of \(c.counts): \(String(describing: ours)) vs \(String(describing: expected))")
        }
        #expect(ref.versions.hasPrefix("scipy"))
    }
}
