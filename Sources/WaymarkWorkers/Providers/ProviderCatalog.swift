import WaymarkConfig
import WaymarkEngine

/// Builds the provider adapter named by a `sender.providers.<channel>` entry (or the `sender.provider`
/// default). The one place that knows which type name is which adapter.
public enum ProviderCatalog {
    /// - Parameters:
    ///   - settings: validated against ``ProviderSettings/schemas`` at load.
    ///   - timeout: per provider call (`sender.timeout_ms`).
    ///   - maxConnections: HTTP connections per provider host (`sender.concurrency`).
    public static func make(_ settings: ProviderSettings, timeout: Duration, maxConnections: Int) throws -> any MessageProvider {
        switch settings.type {
        case "file": return try FileProvider(path: settings.options["path"] ?? "-")
        case "webhook":
            return try WebhookProvider(url: settings.option("url"), timeout: timeout, caBundlePath: settings.options["ca_file"],
                                       maxConnections: maxConnections, signingSecret: settings.secrets["signing_secret"])
        // ADAPTERS: one case per provider type in ProviderSettings.schemas.
        case "twilio": return try TwilioProvider(settings: settings, timeout: timeout, maxConnections: maxConnections)
        case "whatsapp_cloud": return try WhatsAppCloudProvider(settings: settings, timeout: timeout, maxConnections: maxConnections)
        case "sendgrid": return try SendGridProvider(settings: settings, timeout: timeout, maxConnections: maxConnections)
        case "fcm": return try FCMProvider(settings: settings, timeout: timeout, maxConnections: maxConnections)
        case "rbm": return try RBMProvider(settings: settings, timeout: timeout, maxConnections: maxConnections)
        case "viber": return try ViberProvider(settings: settings, timeout: timeout, maxConnections: maxConnections)
        default: throw ProviderError(message: "provider type '\(settings.type)' has no adapter")
        }
    }
}

/// The provider, rate and burst of every channel a sender serves.
public struct ChannelProviders: Sendable {
    public struct Route: Sendable {
        public var provider: any MessageProvider
        /// Calls per second, shared by all sender processes (the Redis token bucket named `<provider>.<channel>`).
        public var ratePerSecond: Double
        public var burst: Int
    }

    public var routes: [Channel: Route]

    public init(routes: [Channel: Route]) { self.routes = routes }

    /// One provider for every channel, at the sender's default rate (tests, the file provider).
    public init(_ provider: any MessageProvider, channels: [Channel], ratePerSecond: Double, burst: Int) {
        routes = Dictionary(uniqueKeysWithValues: channels.map { ($0, Route(provider: provider, ratePerSecond: ratePerSecond, burst: burst)) })
    }

    /// The routes `sender:` configures for `channels`: `sender.providers.<channel>` where given,
    /// else the `sender.provider` default (one instance shared by those channels). A rate comes from
    /// the channel's settings, else the adapter's documented default, else `sender.rate_per_second`.
    public static func configured(_ sender: SenderSettings, channels: [Channel]) throws -> ChannelProviders {
        let timeout = Duration.milliseconds(sender.timeoutMilliseconds)
        var shared: (any MessageProvider)?
        var routes: [Channel: Route] = [:]
        for channel in channels {
            if let settings = sender.providers[channel.rawValue] {
                let provider = try ProviderCatalog.make(settings, timeout: timeout, maxConnections: sender.concurrency)
                let defaults = provider.defaultRate
                routes[channel] = Route(provider: provider, ratePerSecond: settings.ratePerSecond ?? defaults?.perSecond ?? sender.ratePerSecond,
                                        burst: settings.burst ?? defaults?.burst ?? sender.burst)
            } else {
                if shared == nil {
                    let fallback = sender.provider == .file
                        ? ProviderSettings(type: "file", options: ["path": sender.filePath])
                        : ProviderSettings(type: "webhook", options: ["url": sender.webhookURL])
                    shared = try ProviderCatalog.make(fallback, timeout: timeout, maxConnections: sender.concurrency)
                }
                routes[channel] = Route(provider: shared!, ratePerSecond: sender.ratePerSecond, burst: sender.burst)
            }
        }
        return ChannelProviders(routes: routes)
    }

    /// Closes every provider once.
    public func shutdown() async {
        var seen = Set<ObjectIdentifier>()
        for route in routes.values {
            let provider = route.provider
            if let object = provider as? AnyObject, !seen.insert(ObjectIdentifier(object)).inserted { continue }
            await provider.shutdown()
        }
    }
}
