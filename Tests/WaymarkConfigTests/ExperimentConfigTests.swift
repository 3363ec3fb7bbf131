import Foundation
import Testing
import WaymarkConfig
import WaymarkEngine

@Suite("Experiment, goal and variant configuration")
struct ExperimentConfigTests {
    static let journey = """
        journey: cart
        version: 1
        key: cart_id
        entry:
          - event: cart_abandoned
        experiment:
          name: copy_test
          salt: s-1
          holdout: 7.5%
          arms:
            - { name: A, weight: 2 }
            - { name: B, weight: 1 }
            - { name: C }
        goal:
          event: purchase
          where: { value: { gte: 10 } }
          within: 3d
        steps:
          - id: pause
            wait: 1h
            variants:
              B: { duration: 30m }
          - id: remind
            send: { channels: [sms, email], template: t1 }
            variants:
              B: { template: t1_short, channels: [email], priority: 3 }
              C: { skip: true }
          - id: route
            branch:
              - if: { journey.arm: C }
                goto: other
              - else: end
          - id: other
            send: { channels: [email], template: t2 }
        """

    @Test func experimentGoalAndVariantsParse() throws {
        let j = try JourneyLoader.parse(yaml: Self.journey, file: "cart.yaml")
        let x = try #require(j.experiment)
        #expect(x.name == "copy_test" && x.salt == "s-1" && x.holdoutPercent == 7.5)
        #expect(x.arms == [ExperimentArm(name: "A", weight: 2), ExperimentArm(name: "B", weight: 1), ExperimentArm(name: "C", weight: 1)])
        let goal = try #require(j.goal)
        #expect(goal.event.type == "purchase" && goal.event.sameKey && goal.window == .days(3))
        #expect(goal.event.filter == Condition([Clause(.event("value"), .atLeast(10))]))
        let steps = j.stages[0].steps
        #expect(steps[0].variants == ["B": StepVariant(duration: .minutes(30))])
        #expect(steps[1].variants == ["B": StepVariant(template: "t1_short", channels: [.email], priority: 3), "C": StepVariant(skip: true)])
        guard case .branch(let cases, _) = steps[2].action else { Issue.record("not a branch"); return }
        #expect(cases[0].condition == Condition([Clause(.journey("arm"), .equals(.string("C")))]))
    }

    @Test func theShippedJourneyRunsItsExperiment() throws {
        let engine = try JourneyLoader.loadEngine(configDirectory: configRoot)
        let cart = try #require(engine.journeys.first { $0.name == "abandoned_cart" })
        #expect(cart.experiment?.arms.map(\.name) == ["A", "B"])
        #expect(cart.experiment?.holdoutPercent == 10)
        #expect(cart.goal?.window == .days(7))
    }

    @Test func mistakesNameTheLine() {
        expectError(Self.journey.replacingOccurrences(of: "B: { template: t1_short", with: "D: { template: t1_short"),
                    line: 26, contains: "unknown arm 'D'")
        expectError(Self.journey.replacingOccurrences(of: "holdout: 7.5%", with: "holdout: 50%"), line: 9, contains: "below 50 %")
        expectError(Self.journey.replacingOccurrences(of: "holdout: 7.5%", with: "holdout: lots"), line: 9, contains: "percentage")
        expectError(Self.journey.replacingOccurrences(of: "{ name: C }", with: "{ name: holdout }"), line: 13, contains: "reserved")
        expectError(Self.journey.replacingOccurrences(of: "{ name: B, weight: 1 }", with: "{ name: B, weight: 0 }"), line: 12, contains: "positive")
        expectError(Self.journey.replacingOccurrences(of: "B: { duration: 30m }", with: "B: { template: x }"),
                    line: 22, contains: "'template'")
        expectError(Self.journey.replacingOccurrences(of: "  within: 3d", with: "  within: 0s"), line: 17, contains: "positive")
        // Variants need an experiment on the journey.
        let noExperiment = Self.journey.components(separatedBy: "\n").filter { line in
            !["experiment:", "  name: copy_test", "  salt: s-1", "  holdout: 7.5%", "  arms:", "    - { name: A, weight: 2 }",
              "    - { name: B, weight: 1 }", "    - { name: C }"].contains(line)
        }.joined(separator: "\n")
        expectError(noExperiment, line: 14, contains: "needs an 'experiment'")
    }

    @Test func globalControlGroupParses() throws {
        let rules = try RulesLoader.parse(yaml: """
            default_timezone: UTC
            experiments:
              global_control: { percent: 2%, salt: gc-2027 }
            """, file: "rules.yaml")
        #expect(rules.experiments == ExperimentRules(globalControlPercent: 2, globalControlSalt: "gc-2027"))
        expectError("default_timezone: UTC\nexperiments:\n  global_control: { percent: 60 }\n", line: 3, contains: "below 50 %", rules: true)
    }
}
