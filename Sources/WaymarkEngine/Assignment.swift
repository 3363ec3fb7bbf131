/// Deterministic experiment assignment: the same salt, customer and instance key give the same arm
/// in every process, machine and release (so replays and retries agree), and different salts give
/// independent splits.
///
/// The draw is FNV-1a 64 (``StableHash``, each part followed by 0xFF) of `salt`, `purpose`, customer
/// id and instance key, passed through the SplitMix64 finaliser (FNV's low bits alone are poorly
/// mixed for short, similar ids), whose top 53 bits give a number in [0, 1). The holdout and the arm
/// use separate draws (`purpose` "holdout" and "arm"), so the arms' shares do not depend on the holdout.
public enum Assignment {
    /// The uniform draw in [0, 1) for one purpose.
    public static func draw(salt: String, purpose: String, customerID: String, key: String) -> Double {
        var h = StableHash()
        h.combine(salt); h.combine(purpose); h.combine(customerID); h.combine(key)
        var z = h.value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / 9_007_199_254_740_992.0
    }

    /// The arm (or ``Experiment/holdoutArm``) a new instance gets under the experiment's current weights.
    public static func arm(in experiment: Experiment, customerID: String, key: String) -> String {
        if experiment.holdoutPercent > 0,
           draw(salt: experiment.salt, purpose: "holdout", customerID: customerID, key: key) * 100 < experiment.holdoutPercent {
            return Experiment.holdoutArm
        }
        let total = experiment.arms.reduce(0) { $0 + $1.weight }
        var point = draw(salt: experiment.salt, purpose: "arm", customerID: customerID, key: key) * total
        for arm in experiment.arms {
            if point < arm.weight { return arm.name }
            point -= arm.weight
        }
        return experiment.arms.last?.name ?? ""
    }

    /// Whether the customer belongs to the global control group.
    public static func inGlobalControl(_ rules: ExperimentRules, customerID: String) -> Bool {
        rules.globalControlPercent > 0
            && draw(salt: rules.globalControlSalt, purpose: "global_control", customerID: customerID, key: "") * 100
                < rules.globalControlPercent
    }
}
