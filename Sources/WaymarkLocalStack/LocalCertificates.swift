import Foundation

/// A throw-away certificate authority and the certificates a local TLS Redis needs, made with the
/// `openssl` command line (P-256 keys, valid two days) in a directory of their own.
///
/// The server certificate names `127.0.0.1` and `localhost`, which is how the local stack's
/// servers are reached; ``issue(_:subjectAltNames:)`` makes further ones (for example with a wrong
/// name, to see a client refuse it).
public struct LocalCertificates: Sendable {
    /// Where the files are.
    public let directory: URL
    /// The authority's certificate (PEM): what a client trusts.
    public let caFile: String
    /// The authority's private key.
    public let caKeyFile: String
    /// The server's certificate, signed by the authority, for `IP:127.0.0.1` and `DNS:localhost`.
    public let serverCertificate: String
    /// The server's private key.
    public let serverKey: String
    /// A client certificate signed by the authority (for `tls-auth-clients yes`).
    public let clientCertificate: String
    /// The client's private key.
    public let clientKey: String

    /// Creates a new authority named `authority` and its server and client certificates in `directory`.
    public static func make(in directory: URL, authority: String = "Waymark local test CA") throws -> LocalCertificates {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let ca = directory.appendingPathComponent("ca.crt").path
        let caKey = directory.appendingPathComponent("ca.key").path
        try openssl(["req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                     "-keyout", caKey, "-out", ca, "-days", "2", "-subj", "/CN=\(authority)",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        let partial = LocalCertificates(directory: directory, caFile: ca, caKeyFile: caKey, serverCertificate: "",
                                        serverKey: "", clientCertificate: "", clientKey: "")
        let server = try partial.issue("server", subjectAltNames: ["IP:127.0.0.1", "DNS:localhost"])
        let client = try partial.issue("client", subjectAltNames: ["DNS:waymark-client"])
        return LocalCertificates(directory: directory, caFile: ca, caKeyFile: caKey,
                                 serverCertificate: server.certificate, serverKey: server.key,
                                 clientCertificate: client.certificate, clientKey: client.key)
    }

    /// A certificate and key named `name` in ``directory``, signed by this authority, carrying
    /// `subjectAltNames` (`IP:…`, `DNS:…`) and usable for both server and client authentication.
    public func issue(_ name: String, subjectAltNames: [String]) throws -> (certificate: String, key: String) {
        let key = directory.appendingPathComponent("\(name).key").path
        let request = directory.appendingPathComponent("\(name).csr").path
        let certificate = directory.appendingPathComponent("\(name).crt").path
        let extensions = directory.appendingPathComponent("\(name).ext")
        try """
            basicConstraints = CA:FALSE
            keyUsage = critical, digitalSignature, keyEncipherment
            extendedKeyUsage = serverAuth, clientAuth
            subjectAltName = \(subjectAltNames.joined(separator: ", "))

            """.write(to: extensions, atomically: true, encoding: .utf8)
        try Self.openssl(["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                          "-keyout", key, "-out", request, "-subj", "/CN=\(name)"])
        try Self.openssl(["x509", "-req", "-in", request, "-CA", caFile, "-CAkey", caKeyFile, "-CAcreateserial",
                          "-out", certificate, "-days", "2", "-extfile", extensions.path])
        return (certificate, key)
    }

    /// The same authority and client certificate, with `certificate`/`key` as the server's
    /// (for a server presenting a certificate made by ``issue(_:subjectAltNames:)``).
    public func servingWith(certificate: String, key: String) -> LocalCertificates {
        LocalCertificates(directory: directory, caFile: caFile, caKeyFile: caKeyFile, serverCertificate: certificate,
                          serverKey: key, clientCertificate: clientCertificate, clientKey: clientKey)
    }

    private static func openssl(_ arguments: [String]) throws {
        let executable = try LocalTools.find("openssl", env: "WAYMARK_OPENSSL", extra: [URL(fileURLWithPath: "/usr/bin/openssl")])
        let (status, output) = try LocalTools.run(executable, arguments)
        guard status == 0 else {
            throw LocalStackError.launchFailed(executable: "openssl \(arguments.first ?? "")", reason: "exited \(status): \(output.suffix(800))")
        }
    }
}
