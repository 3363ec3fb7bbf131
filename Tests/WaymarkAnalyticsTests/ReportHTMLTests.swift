import Foundation
import Testing
@testable import WaymarkAnalytics
#if canImport(Glibc)
import Glibc
#endif

/// The HTML report pages: self-contained, data escaped, deterministic, and really rendered (headless
/// Chromium takes a screenshot; the screenshot must not be blank). Needs `chromium` (`make setup`).
@Suite struct ReportHTMLTests {
    /// A name that breaks the page unless escaped.
    static let nasty = "<b>&\"x\""
    static let nastyEscaped = "&lt;b&gt;&amp;&quot;x&quot;"

    @Test func pagesAreSelfContained() {
        for (name, html) in Fixtures.pages() {
            let lower = html.lowercased()
            for forbidden in ["http://", "https://", "<script", "src=", "<link", "<img", "<iframe", "url(", "@import", "//cdn"] {
                let found = lower.contains(forbidden)
                #expect(!found, "\(name) contains \(forbidden)")
            }
            let doctype = lower.hasPrefix("<!doctype html>"), inline = lower.contains("<style>") && lower.contains("<svg")
            #expect(doctype, "\(name) starts with a doctype")
            #expect(inline, "\(name) has inline CSS and SVG")
        }
    }

    @Test func dataStringsAreEscaped() {
        for (name, html) in Fixtures.pages() {
            let raw = html.contains(Self.nasty), fragment = html.contains("&\"x\""), escaped = html.contains(Self.nastyEscaped)
            #expect(!raw, "\(name) holds the raw name")
            #expect(!fragment, "\(name) holds an unescaped fragment of it")
            #expect(escaped, "\(name) shows the name escaped")
        }
        // The journey name, a stage, a step, a channel and an arm each carry the nasty name.
        let journey = ReportHTML.journey(Fixtures.journey(days: 3))
        #expect(journey.components(separatedBy: Self.nastyEscaped).count - 1 >= 5)
    }

    @Test func outputIsDeterministic() {
        #expect(ReportHTML.journey(Fixtures.journey(days: 9)) == ReportHTML.journey(Fixtures.journey(days: 9)))
        let e = Fixtures.experiment(days: 5)
        #expect(ReportHTML.experiment(e, journey: Fixtures.journey(days: 5)) == ReportHTML.experiment(e, journey: Fixtures.journey(days: 5)))
    }

    @Test func pagesShowTheNumbers() {
        let j = ReportHTML.journey(Fixtures.journey(days: 3))
        #expect(j.contains("12,480"))                  // entered, with a thousands separator
        #expect(j.contains("7.4\u{A0}%"))              // conversion rate 924 / 12,480
        #expect(j.contains("2.0\u{A0}h"))              // time to convert p50
        #expect(j.contains("No days in this range.") == false)
        #expect(ReportHTML.journey(Fixtures.journey(days: 0)).contains("No days in this range."))
        let e = ReportHTML.experiment(Fixtures.experiment(days: 3), journey: nil)
        #expect(e.contains("B beats A, p = 0.003"))
        #expect(e.contains("χ² = 9.21, df = 2"))
        #expect(e.contains("+23.0\u{A0}%"))            // lift of B vs the control
        #expect(e.contains("&lt; 0.001"))
        #expect(!e.contains("Journey funnel"))
        #expect(ReportHTML.experiment(Fixtures.experiment(days: 3), journey: Fixtures.journey(days: 3)).contains("Journey funnel"))
    }

    @Test func formatting() {
        #expect(ReportHTML.count(0) == "0")
        #expect(ReportHTML.count(999) == "999")
        #expect(ReportHTML.count(1_000) == "1,000")
        #expect(ReportHTML.count(1_234_567) == "1,234,567")
        #expect(ReportHTML.count(-12_345) == "−12,345")
        #expect(ReportHTML.percent(0.1234) == "12.3\u{A0}%")
        #expect(ReportHTML.percent(1) == "100.0\u{A0}%")
        #expect(ReportHTML.percent(0.00049) == "0.0\u{A0}%")
        #expect(ReportHTML.percent(nil) == "–")
        #expect(ReportHTML.signedPercent(0.12) == "+12.0\u{A0}%")
        #expect(ReportHTML.signedPercent(-0.031) == "−3.1\u{A0}%")
        #expect(ReportHTML.signedPercent(0) == "0.0\u{A0}%")
        #expect(ReportHTML.fixed(12_345.678, 2) == "12,345.68")
        #expect(ReportHTML.fixed(.nan, 1) == "–")
        #expect(ReportHTML.duration(850) == "850\u{A0}ms")
        #expect(ReportHTML.duration(4_200) == "4.2\u{A0}s")
        #expect(ReportHTML.duration(12 * 60_000) == "12\u{A0}min")
        #expect(ReportHTML.duration(3.5 * 3_600_000) == "3.5\u{A0}h")
        #expect(ReportHTML.duration(2 * 86_400_000) == "2.0\u{A0}d")
        #expect(ReportHTML.escape("a<b>&\"'") == "a&lt;b&gt;&amp;&quot;&#39;")
        let axis = ReportHTML.Axis(max: 0.137, integer: false)
        #expect(axis.max >= 0.137 && axis.ticks.count >= 4 && axis.ticks.count <= 7)
        let counts = ReportHTML.Axis(max: 3, integer: true)
        #expect(counts.step == 1 && counts.max == 3)
        #expect(ReportHTML.Axis(max: 0, integer: true).max > 0)
    }

    /// Chromium runs one at a time (the machine may be small).
    @Suite(.serialized) struct Rendered {
        @Test(.serialized, arguments: ["journey", "journey-1-day", "journey-0-days", "experiment", "experiment-1-day"])
        func pageRendersInChromium(_ name: String) async throws {
            let html = try #require(Fixtures.pages().first { $0.name == name }?.html)
            let shot = try await Chromium.screenshot(html: html)
            #expect(shot.width == 1200 && shot.height == 1600, "\(name): \(shot)")
            #expect(!shot.isBlank, "\(name) renders blank: \(shot)")
            // The page's own background (#f3f5f8) shows around the sections: the inline CSS was applied.
            #expect(shot.pageBackgroundFraction > 0.03, "\(name): \(shot)")
        }

        /// The blank check can fail: an empty white page is reported blank.
        @Test func blankPageIsDetectedAsBlank() async throws {
            let shot = try await Chromium.screenshot(html: "<!DOCTYPE html><html><body style=\"background:#fff\"></body></html>")
            #expect(shot.isBlank, "\(shot)")
            #expect(shot.nonWhiteFraction < 0.001 && shot.colors < 8, "\(shot)")
        }
    }
}

// MARK: - Fixtures

enum Fixtures {
    static let nasty = ReportHTMLTests.nasty

    static func counts(decided: Int64 = 0, sent: Int64, delivered: Int64, clicked: Int64, converted: Int64, unsubscribed: Int64 = 0) -> MessageCounts {
        var c = MessageCounts()
        c.decided = decided == 0 ? sent + sent / 10 : decided
        c.suppressed = sent / 12
        c.sent = sent
        c.delivered = delivered
        c.read = delivered / 2
        c.failed = sent - delivered
        c.clicked = clicked
        c.unsubscribed = unsubscribed
        c.converted = converted
        c.deliveryRate = sent > 0 ? Double(delivered) / Double(sent) : nil
        c.clickThroughRate = delivered > 0 ? Double(clicked) / Double(delivered) : nil
        c.conversionRate = sent > 0 ? Double(converted) / Double(sent) : nil
        c.unsubscribeRate = delivered > 0 ? Double(unsubscribed) / Double(delivered) : nil
        return c
    }

    static func day(_ i: Int) -> String {
        // December 2026, then January 2027: enough for the 40-day fixture.
        i < 31 ? "2026-12-\(i + 1 < 10 ? "0" : "")\(i + 1)" : "2027-01-\(i - 30 < 10 ? "0" : "")\(i - 30)"
    }

    static func journey(days: Int) -> JourneyReport {
        let entered: Int64 = 12_480
        let reached: [(String, Int64, Int64, Int64)] = [   // stage, reached, exited, completed
            ("welcome", 12_480, 1_100, 0), ("activation", 8_930, 2_400, 310), (nasty, 4_120, 900, 420), ("winback – a long stage name beyond thirty characters", 1_650, 0, 1_180),
        ]
        var stages: [StageRow] = []
        for (i, s) in reached.enumerated() {
            let next = i + 1 < reached.count ? Double(reached[i + 1].1) / Double(s.1) : nil
            stages.append(StageRow(stage: s.0, reached: s.1, shareOfEntered: Double(s.1) / Double(entered), conversionToNext: next,
                                   dropOff: next.map { 1 - $0 }, exitedHere: s.2, completedHere: s.3, convertedHere: Int64(100 + i * 90)))
        }
        let daily = (0..<days).map { i in
            let wave = Int64((i * 37) % 11)
            return DayRow(day: day(i), entered: 300 + wave * 40, sent: 520 + wave * 55, delivered: 500 + wave * 50, clicked: 60 + wave * 6,
                          converted: 20 + wave * 3)
        }
        return JourneyReport(
            journey: "onboarding \(nasty)", range: ReportRange(from: "2026-12-01T00:00:00Z", to: "2026-12-08T00:00:00Z"),
            entered: entered, converted: 924, conversionRate: 924.0 / Double(entered), stages: stages,
            timeToConvert: Percentiles(count: 924, p50: 7_200_000, p90: 172_800_000, p99: 518_400_000),
            channels: [
                ChannelRow(channel: "email", counts: counts(sent: 18_200, delivered: 17_650, clicked: 2_120, converted: 510, unsubscribed: 88)),
                ChannelRow(channel: "sms", counts: counts(sent: 6_400, delivered: 6_310, clicked: 890, converted: 260, unsubscribed: 12)),
                ChannelRow(channel: nasty, counts: counts(sent: 2_100, delivered: 1_480, clicked: 96, converted: 41, unsubscribed: 0)),
                ChannelRow(channel: "webhook", counts: counts(sent: 0, delivered: 0, clicked: 0, converted: 0)),
            ],
            steps: [
                StepRow(step: "welcome_email", stage: "welcome", counts: counts(sent: 11_900, delivered: 11_620, clicked: 1_480, converted: 300, unsubscribed: 60)),
                StepRow(step: nasty, stage: "activation", counts: counts(sent: 6_400, delivered: 6_310, clicked: 890, converted: 260, unsubscribed: 12)),
                StepRow(step: "nudge_push", stage: nasty, counts: counts(sent: 2_100, delivered: 1_480, clicked: 96, converted: 41)),
            ],
            arms: [
                ArmRow(arm: "A", entered: 5_600, converted: 380, conversionRate: 380.0 / 5_600,
                       counts: counts(sent: 12_000, delivered: 11_700, clicked: 1_400, converted: 380, unsubscribed: 50)),
                ArmRow(arm: nasty, entered: 5_630, converted: 470, conversionRate: 470.0 / 5_630,
                       counts: counts(sent: 12_100, delivered: 11_800, clicked: 1_690, converted: 470, unsubscribed: 44)),
                ArmRow(arm: "holdout", entered: 1_250, converted: 74, conversionRate: 74.0 / 1_250,
                       counts: counts(decided: 2_600, sent: 0, delivered: 0, clicked: 0, converted: 0)),
            ],
            daily: daily)
    }

    static func proportion(_ successes: Int64, _ trials: Int64) -> Proportion {
        guard trials > 0 else { return Proportion(successes: 0, trials: 0, rate: nil, low: nil, high: nil) }
        let n = Double(trials), p = Double(successes) / n, z = 1.959964
        let centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        let half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)).squareRoot()
        return Proportion(successes: successes, trials: trials, rate: p, low: centre - half, high: centre + half)
    }

    static func experiment(days: Int) -> ExperimentReport {
        let a = proportion(380, 5_600), b = proportion(470, 5_630), c = proportion(300, 3_900), h = proportion(74, 1_250)
        func vs(_ x: Proportion, _ ref: Proportion, _ against: String, p: Double?) -> Comparison {
            Comparison(against: against, relativeLift: (x.rate! - ref.rate!) / ref.rate!, absoluteDifference: x.rate! - ref.rate!, z: 2.1, pValue: p)
        }
        func arm(_ name: String, _ share: Double?, _ p: Proportion, control: Comparison?, holdout: Comparison?) -> ExperimentArmResult {
            ExperimentArmResult(arm: name, configuredShare: share, conversion: p, vsControl: control, vsHoldout: holdout,
                                messages: counts(sent: p.trials * 2, delivered: p.trials * 2 - 40, clicked: p.trials / 4, converted: p.successes),
                                timeToConvert: Percentiles(count: p.successes, p50: 5_400_000, p90: 90_000_000, p99: 300_000_000))
        }
        let arms = [
            arm("A", 0.4, a, control: nil, holdout: vs(a, h, "holdout", p: 0.21)),
            arm("B", 0.4, b, control: vs(b, a, "A", p: 0.003), holdout: vs(b, h, "holdout", p: 0.0004)),
            arm(nasty, 0.2, c, control: vs(c, a, "A", p: 0.42), holdout: vs(c, h, "holdout", p: 0.09)),
            arm("holdout", nil, h, control: vs(h, a, "A", p: 0.31), holdout: nil),
            arm("global_control", nil, proportion(0, 0), control: nil, holdout: nil),
        ]
        let daily = (0..<days).map { i in
            let w = Int64((i * 29) % 7)
            return ExperimentDay(day: day(i), arms: [
                "A": DayArm(exposures: 780 + w * 20, conversions: 50 + w * 3),
                "B": DayArm(exposures: 790 + w * 18, conversions: 64 + w * 4),
                nasty: DayArm(exposures: 400 + w * 10, conversions: 30 + w * 2),
                "holdout": DayArm(exposures: 170 + w * 5, conversions: 9 + w),
            ])
        }
        return ExperimentReport(
            experiment: "subject-line \(nasty)", journey: "onboarding \(nasty)",
            range: ReportRange(from: "2026-12-01T00:00:00Z", to: "2026-12-08T00:00:00Z"), control: "A", holdoutPercent: 10,
            arms: arms, chiSquared: ChiSquared(statistic: 9.2104, degreesOfFreedom: 2, pValue: 0.01),
            verdict: "B beats A, p = 0.003", holdoutVerdict: "Journey vs holdout: +12.0 % conversions, p = 0.04 \(nasty)", daily: daily)
    }

    /// Every page variant the tests look at, by name.
    static func pages() -> [(name: String, html: String)] {
        [
            ("journey", ReportHTML.journey(journey(days: 7))),
            ("journey-1-day", ReportHTML.journey(journey(days: 1))),
            ("journey-0-days", ReportHTML.journey(journey(days: 0))),
            ("journey-40-days", ReportHTML.journey(journey(days: 40))),
            ("experiment", ReportHTML.experiment(experiment(days: 7), journey: journey(days: 7))),
            ("experiment-1-day", ReportHTML.experiment(experiment(days: 1), journey: nil)),
            ("experiment-40-days", ReportHTML.experiment(experiment(days: 40), journey: nil)),
        ]
    }
}

// MARK: - Headless Chromium and a PNG check

/// What the PNG check found in a screenshot.
struct Screenshot: CustomStringConvertible {
    var width: Int
    var height: Int
    /// Share of pixels with a channel below 245.
    var nonWhiteFraction: Double
    /// Distinct RGB colours.
    var colors: Int
    /// Share of pixels of the report pages' background colour, #f3f5f8.
    var pageBackgroundFraction: Double

    /// Blank: under 5 % non-white pixels or fewer than 8 colours.
    var isBlank: Bool { nonWhiteFraction < 0.05 || colors < 8 }

    var description: String {
        "\(width)×\(height), \(String(format: "%.1f", nonWhiteFraction * 100)) % non-white, \(colors) colours, \(String(format: "%.1f", pageBackgroundFraction * 100)) % page background"
    }
}

struct ChromiumError: Error, CustomStringConvertible {
    var description: String
}

enum Chromium {
    /// `chromium` on PATH, else /usr/bin/chromium.
    static func binary() -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        for dir in path.split(separator: ":") + ["/usr/bin"] {
            let candidate = "\(dir)/chromium"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Renders `html` (1200 × 1600) with headless Chromium and checks the PNG with ``pngCheck``.
    /// Fails (never skips) when chromium is missing. Temporary files are removed.
    static func screenshot(html: String, timeout: Duration = .seconds(60)) async throws -> Screenshot {
        guard let chromium = binary() else {
            throw ChromiumError(description: "chromium not found on PATH or at /usr/bin/chromium: run `make setup` (it installs Debian's chromium)")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("waymark-reporthtml-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let page = dir.appendingPathComponent("page.html"), png = dir.appendingPathComponent("shot.png")
        let log = dir.appendingPathComponent("chromium.log"), script = dir.appendingPathComponent("pngcheck.py")
        try html.write(to: page, atomically: true, encoding: .utf8)
        try pngCheck.write(to: script, atomically: true, encoding: .utf8)

        let arguments = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
            "--user-data-dir=\(dir.appendingPathComponent("profile").path)",
            "--screenshot=\(png.path)", "--window-size=1200,1600", page.absoluteString,
        ]
        let status = try await run(chromium, arguments, log: log, timeout: timeout)
        let chromiumLog = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        guard status == 0, FileManager.default.fileExists(atPath: png.path) else {
            throw ChromiumError(description: "chromium exited \(status) without a screenshot; log tail:\n\(chromiumLog.suffix(2_000))")
        }
        let checkLog = dir.appendingPathComponent("check.log")
        let checkStatus = try await run("/usr/bin/env", ["python3", script.path, png.path], log: checkLog, timeout: timeout)
        let output = (try? String(contentsOf: checkLog, encoding: .utf8)) ?? ""
        let numbers = output.split(whereSeparator: \.isWhitespace).compactMap { Double($0) }
        guard checkStatus == 0, numbers.count == 5 else {
            throw ChromiumError(description: "PNG check failed (\(checkStatus)): \(output.suffix(2_000))")
        }
        return Screenshot(width: Int(numbers[0]), height: Int(numbers[1]), nonWhiteFraction: numbers[2], colors: Int(numbers[3]),
                          pageBackgroundFraction: numbers[4])
    }

    /// Runs a program with stdout and stderr to `log`; SIGKILLs it (by PID) after `timeout`.
    static func run(_ executable: String, _ arguments: [String], log: URL, timeout: Duration) async throws -> Int32 {
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let output = try FileHandle(forWritingTo: log)
        defer { try? output.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw ChromiumError(description: "\(executable) did not finish within \(timeout); killed PID \(process.processIdentifier)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return process.terminationStatus
    }

    /// Decodes an 8-bit RGB/RGBA PNG with the standard library (zlib and the five PNG filters) and
    /// prints: width height non-white-fraction distinct-colours page-background-fraction.
    static let pngCheck = #"""
        import struct, sys, zlib
        from collections import Counter

        data = open(sys.argv[1], "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
        pos, idat, header = 8, [], None
        while pos < len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            body = data[pos + 8:pos + 8 + length]
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", body)
            elif kind == b"IDAT":
                idat.append(body)
            elif kind == b"IEND":
                break
            pos += 12 + length
        width, height, depth, ctype, _, _, interlace = header
        assert depth == 8 and ctype in (2, 6) and interlace == 0, "unsupported PNG %r" % (header,)
        bpp = 3 if ctype == 2 else 4
        stride = width * bpp
        raw = zlib.decompress(b"".join(idat))
        prev = bytearray(stride)
        counts = Counter()
        nonwhite = 0
        for y in range(height):
            start = y * (stride + 1)
            ftype, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
            if ftype == 1:
                for i in range(bpp, stride):
                    row[i] = (row[i] + row[i - bpp]) & 255
            elif ftype == 2:
                row = bytearray((a + b) & 255 for a, b in zip(row, prev))
            elif ftype == 3:
                for i in range(stride):
                    left = row[i - bpp] if i >= bpp else 0
                    row[i] = (row[i] + ((left + prev[i]) >> 1)) & 255
            elif ftype == 4:
                for i in range(stride):
                    a = row[i - bpp] if i >= bpp else 0
                    b = prev[i]
                    c = prev[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            elif ftype != 0:
                raise SystemExit("bad filter %d" % ftype)
            rgb = bytearray(row)
            if bpp == 4:
                del rgb[3::4]
            rgb = bytes(rgb)
            pixels = [rgb[i:i + 3] for i in range(0, len(rgb), 3)]
            counts.update(pixels)
            prev = row
        for colour, n in counts.items():
            if min(colour) < 245:
                nonwhite += n
        total = width * height
        print(width, height, nonwhite / total, len(counts), counts[bytes((243, 245, 248))] / total)
        """#
}
