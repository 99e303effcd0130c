// Package security is what Ferry's listeners share to secure themselves:
// TLS with certificates reloaded when their files change (tls.go), users
// with bcrypt-hashed secrets and how a caller proves it is one (users.go,
// authn.go), RocketMQ ACL 2.0 style authorization (acl.go), and the rule
// that a listener outside loopback needs TLS and authentication unless its
// config says insecure (exposure.go).
//
// The grpc and http transports (plugins/transport/*), the admin listener
// (core/admin) and the client library (core/client) call it; it depends on
// nothing of Ferry's but the SDK's Problem type.
package security
