#include <hiredis/hiredis.h>
#include <hiredis/hiredis_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

/*
 * TLS helpers for WaymarkRedis. hiredis' own redisCreateSSLContext verifies the certificate
 * chain but not that the certificate names the server (no host or IP check), so Waymark builds
 * the OpenSSL context and each connection's SSL object itself and hands it to redisInitiateSSL.
 * They are static inline (imported by Swift as functions) because OpenSSL's SSL_set_tlsext_host_name
 * is a macro Swift cannot call.
 */

static inline void waymark_tls_error(char *error, size_t length, const char *what) {
    unsigned long code = ERR_peek_last_error();
    char reason[256] = "";
    if (code != 0) ERR_error_string_n(code, reason, sizeof(reason));
    snprintf(error, length, "%s%s%s", what, code != 0 ? ": " : "", reason);
    ERR_clear_error();
}

/// A client context verifying the server against `ca_file` (or the system's trust store when
/// NULL), presenting `cert_file`/`key_file` when both are given. NULL on failure, with `error` set.
static inline SSL_CTX *waymark_tls_context(const char *ca_file, const char *cert_file, const char *key_file,
                                           char *error, size_t length) {
    ERR_clear_error();
    SSL_CTX *context = SSL_CTX_new(TLS_client_method());
    if (context == NULL) { waymark_tls_error(error, length, "cannot create a TLS context"); return NULL; }
    SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION);
    SSL_CTX_set_verify(context, SSL_VERIFY_PEER, NULL);
    int loaded = ca_file != NULL ? SSL_CTX_load_verify_locations(context, ca_file, NULL)
                                 : SSL_CTX_set_default_verify_paths(context);
    if (loaded != 1) {
        waymark_tls_error(error, length, ca_file != NULL ? "cannot load the CA file" : "cannot load the system CA store");
        SSL_CTX_free(context);
        return NULL;
    }
    if (cert_file != NULL && key_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(context, cert_file) != 1) {
            waymark_tls_error(error, length, "cannot load the client certificate");
            SSL_CTX_free(context);
            return NULL;
        }
        if (SSL_CTX_use_PrivateKey_file(context, key_file, SSL_FILETYPE_PEM) != 1
            || SSL_CTX_check_private_key(context) != 1) {
            waymark_tls_error(error, length, "cannot load the client key (or it does not match the certificate)");
            SSL_CTX_free(context);
            return NULL;
        }
    }
    return context;
}

/// Result of ``waymark_redis_start_tls``.
enum { WAYMARK_TLS_OK = 0, WAYMARK_TLS_HANDSHAKE_FAILED = 1, WAYMARK_TLS_NOT_TRUSTED = 2 };

/// Runs the TLS handshake on a connected context: SNI set to `server_name` when it is a host name,
/// and the certificate checked to name `server_name` (DNS name, or IP address when it is one).
/// WAYMARK_TLS_NOT_TRUSTED means the server's certificate was refused (chain or name); `error`
/// then says why in OpenSSL's words.
static inline int waymark_redis_start_tls(redisContext *c, SSL_CTX *context, const char *server_name,
                                          char *error, size_t length) {
    ERR_clear_error();
    SSL *ssl = SSL_new(context);
    if (ssl == NULL) { waymark_tls_error(error, length, "cannot create a TLS session"); return WAYMARK_TLS_HANDSHAKE_FAILED; }
    X509_VERIFY_PARAM *parameters = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(parameters, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int isAddress = X509_VERIFY_PARAM_set1_ip_asc(parameters, server_name) == 1;
    if (!isAddress) {
        if (X509_VERIFY_PARAM_set1_host(parameters, server_name, 0) != 1
            || SSL_set_tlsext_host_name(ssl, server_name) != 1) {
            waymark_tls_error(error, length, "cannot set the server name");
            SSL_free(ssl);
            return WAYMARK_TLS_HANDSHAKE_FAILED;
        }
    }
    ERR_clear_error();
    if (redisInitiateSSL(c, ssl) == REDIS_OK) return WAYMARK_TLS_OK;  // hiredis owns `ssl` now
    long verified = SSL_get_verify_result(ssl);
    int result = WAYMARK_TLS_HANDSHAKE_FAILED;
    if (verified != X509_V_OK) {
        snprintf(error, length, "server certificate refused: %s", X509_verify_cert_error_string(verified));
        result = WAYMARK_TLS_NOT_TRUSTED;
    } else {
        snprintf(error, length, "TLS handshake failed: %s", c->errstr);
    }
    ERR_clear_error();
    SSL_free(ssl);
    return result;
}
