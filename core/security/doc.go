// Package security is what Ferry's listeners share to secure themselves:
// TLS with certificates reloaded when their files change (tls.go), users
// with bcrypt-hashed secrets and how a caller proves it is one (users.go,
// authn.go), RocketMQ ACL 2.0 style authorization (acl.go, guard.go, and
// admin.go for the admin listener), how replication peers prove they
// belong to the cluster (peer.go: mutual TLS with the cluster CA and the
// cluster secret, on raw connections and as gRPC credentials in
// peergrpc.go), and the rule that a listener outside loopback needs TLS and
// authentication unless the pipeline says security.allow_plaintext
// (exposure.go).
//
// The grpc and http transports (plugins/transport/*), the replication
// plugins (plugins/replication/*), the admin listener (core/admin), the
// engine, `ferry cluster` and the client library (core/client) call it; it
// depends on nothing of Ferry's but the SDK.
package security
