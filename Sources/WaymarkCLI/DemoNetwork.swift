import Crypto
import Foundation
import WaymarkEngine
import WaymarkWire
import WaymarkWorkers

/// Stands in for the providers' networks in `waymark demo`: reads what the file provider handed over
/// since the last pass and calls the receipts endpoint back as providers would, over HTTP and signed
/// (Waymark's webhook signature for statuses, Twilio's for SMS replies). Outcomes are drawn from each
/// message id, so the same day gives the same receipts: about 4 % fail, the rest are delivered; of
/// those, app and e-mail messages are often read and some clicked; one SMS recipient in a few hundred
/// replies STOP.
final class DemoNetwork {
    private let file: String
    private let base: String
    private let webhookSecret: String
    private let twilioToken: String
    private let publicURL: String
    private let http = ProviderHTTP(timeout: .seconds(10), maxConnections: 2)
    private var offset = 0
    private(set) var callbacks = 0
    private(set) var stops = 0

    init(file: String, receiptsBase: String, webhookSecret: String, twilioToken: String, publicURL: String) {
        self.file = file; self.base = receiptsBase; self.webhookSecret = webhookSecret
        self.twilioToken = twilioToken; self.publicURL = publicURL
    }

    /// Calls back for every message handed over since the last pass, at simulated time `now`.
    func pass(now: Timestamp) async throws {
        guard let data = FileManager.default.contents(atPath: file), data.count > offset else { return }
        let complete = data[offset...].lastIndex(of: 0x0A).map { $0 + 1 } ?? offset
        let lines = data[offset..<complete].split(separator: 0x0A)
        offset = complete
        var statuses: [[String: Any]] = []
        var replies: [String] = []
        for line in lines {
            guard case .success(let handoff) = ProviderHandoff.decode(line) else { continue }
            let id = handoff.message.messageID.description
            let draw = Int(handoff.message.messageID.raw % 1000)
            func status(_ s: String, after seconds: Int64, detail: String? = nil) {
                var item: [String: Any] = ["message_id": id, "status": s, "at": now.adding(TimeSpan(milliseconds: seconds * 1000)).description]
                if let detail { item["detail"] = detail }
                statuses.append(item)
            }
            if draw < 40 { status("failed", after: 5, detail: "demo network: undeliverable"); continue }
            status("delivered", after: 5)
            let channel = handoff.message.channel
            if channel != .sms, draw % 100 < 45 { status("read", after: 600) }
            // About 12 % click; the demo's shoppers like the 10 %-off copy of the shipped experiment's
            // arm B better (20 %), so its report has a click-through difference to show. (Purchases
            // come from the generated day and do not depend on the arm.)
            let clickShare = handoff.message.template == "cart_reminder_1_offer" ? 20 : 12
            if draw % 100 >= 40 && draw % 100 < 40 + clickShare { status("clicked", after: 900) }
            if channel == .sms, draw % 300 == 7 { replies.append(handoff.to) }
        }
        if !statuses.isEmpty {
            let body = try JSONSerialization.data(withJSONObject: statuses)
            let signature = WebhookProvider.signature(secret: SymmetricKey(data: Data(webhookSecret.utf8)),
                                                      timestamp: Int64(Date().timeIntervalSince1970), body: Array(body))
            try check(await http.send(.POST, base + "/receipts/webhook", headers: [("Content-Type", "application/json"),
                                                                                 (WebhookProvider.signatureHeader, signature)], body: Array(body)))
            callbacks += statuses.count
        }
        for from in replies {
            let form = [("From", from), ("To", "+15550100"), ("Body", "STOP")]
            let signature = CallbackSignatures.twilio(authToken: twilioToken, url: publicURL + "/receipts/twilio/inbound",
                                                      parameters: Dictionary(uniqueKeysWithValues: form))
            try check(await http.send(.POST, base + "/receipts/twilio/inbound",
                                      headers: [("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", signature)],
                                      body: Array(FormEncoding.encode(form).utf8)))
            stops += 1
        }
    }

    private func check(_ result: Result<ProviderHTTP.Response, ProviderFailure>) throws {
        switch result {
        case .success(let response) where response.status == 200: return
        case .success(let response): throw DemoNetworkError(detail: "receipts endpoint answered \(response.status): \(response.bodyText)")
        case .failure(let failure): throw DemoNetworkError(detail: "receipts endpoint unreachable: \(failure.result)")
        }
    }

    func shutdown() async { await http.shutdown() }
}

struct DemoNetworkError: Error, CustomStringConvertible {
    var detail: String
    var description: String { detail }
}
