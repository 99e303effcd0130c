package client_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security/securitytest"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// hashOf is the bcrypt hash of password at the lowest cost (the tests
// check many passwords; a real users file uses the default cost).
func hashOf(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// syncBuffer collects the node's log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSecureNode starts a node (plugins in their own processes) from the
// pipeline body, in which ADDR and DIR stand for its listen address and
// data directory, and returns the address and the node's log.
func startSecureNode(t *testing.T, body string) (string, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	addr := ferrytest.FreeAddr(t)
	body = strings.NewReplacer("ADDR", addr, "DIR", filepath.Join(dir, "data")).Replace(body)
	path := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	e, err := engine.Start(context.Background(), cfg, engine.Options{
		Registry: builtin.Registry(), PluginExe: ferrytest.Binary(t),
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: logs}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Errorf("close node: %v", err)
		}
	})
	return addr, logs
}

// aclNode is the node most tests share: users with the permissions their
// names say.
func aclNode(t *testing.T, dataPlane string) string {
	t.Helper()
	addr, _ := aclNodeLogs(t, dataPlane)
	return addr
}

// aclNodeLogs is aclNode with the node's log.
func aclNodeLogs(t *testing.T, dataPlane string) (string, *syncBuffer) {
	t.Helper()
	addr, logs := startSecureNode(t, fmt.Sprintf(`name: acl
node: {data_dir: DIR}
plugins:
  data_plane: %s
  storage: {type: memory}
  transport: {type: grpc, config: {listen: ADDR, shutdown_timeout: 200ms}}
topics: [{name: orders.eu, queues: 2}, {name: orders.secret, queues: 1}, {name: other, queues: 1}]
security:
  users:
    - {name: admin, password_hash: %q, super: true}
    - name: alice
      password_hash: %q
      policies:
        - {resources: ["Topic:orders.*", "Group:billing"], actions: [Pub, Sub, Get]}
        - {resources: ["Topic:orders.secret"], actions: [Pub], decision: Deny}
    - name: mallory
      password_hash: %q
      policies:
        - {resources: ["Topic:orders*", "Group:billing"], actions: [Sub]}
    - name: bob
      password_hash: %q
      policies:
        - {resources: ["Topic:*"], actions: [All]}
`, dataPlane, hashOf(t, "admin-pw"), hashOf(t, "alice-pw"), hashOf(t, "mallory-pw"), hashOf(t, "bob-pw")))
	// A failed test shows what the node logged (each failed authentication
	// with its source and user): a refusal the node did not log came from
	// some other process on its port (TestAuthPermissions once failed with
	// "unknown user or wrong password" for alice, not reproduced since).
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node at %s logged:\n%s", addr, logs.String())
		}
	})
	return addr, logs
}

func dialAs(t *testing.T, addr, user, password string, extra ...client.Option) (*client.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := append([]client.Option{client.WithLogger(quiet)}, extra...)
	if user != "" {
		opts = append(opts, client.WithCredentials(user, password))
	}
	c, err := client.Dial(ctx, addr, opts...)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func mustDialAs(t *testing.T, addr, user, password string, extra ...client.Option) *client.Client {
	t.Helper()
	c, err := dialAs(t, addr, user, password, extra...)
	if err != nil {
		t.Fatalf("dial as %q: %v", user, err)
	}
	return c
}

func send(ctx context.Context, c *client.Client, topic, body string) error {
	_, err := c.NewProducer(client.ProducerOptions{Retries: client.NoRetries}).SendSync(ctx, client.Message{Topic: topic, Body: []byte(body)})
	return err
}

// rawBroker is the Broker service with the credentials of user, for the
// calls the client library does not make the way an attacker would.
func rawBroker(t *testing.T, addr, user, password string) (ferryv1.BrokerClient, func(context.Context) context.Context) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	return ferryv1.NewBrokerClient(cc), func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", auth)
	}
}

func wantCode(t *testing.T, what string, err error, code codes.Code, contains string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), contains) {
		t.Fatalf("%s: %v; want %s containing %q", what, err, code, contains)
	}
}

// On a node with users, a client without credentials, with a wrong
// password or as an unknown user is refused, and the answer does not say
// which of the two it was.
func TestAuthRefusesWithoutValidCredentials(t *testing.T) {
	addr := aclNode(t, "ring")
	if _, err := dialAs(t, addr, "", ""); !errors.Is(err, sdk.ErrUnauthenticated) || !strings.Contains(err.Error(), "requires authentication") {
		t.Fatalf("dial without credentials: %v; want ErrUnauthenticated saying the node requires authentication", err)
	}
	_, wrong := dialAs(t, addr, "alice", "nope")
	_, unknown := dialAs(t, addr, "nobody", "nope")
	for _, err := range []error{wrong, unknown} {
		if !errors.Is(err, sdk.ErrUnauthenticated) || !strings.Contains(err.Error(), "unknown user or wrong password") {
			t.Fatalf("dial with bad credentials: %v; want ErrUnauthenticated, unknown user or wrong password", err)
		}
	}
	if a, b := strings.ReplaceAll(wrong.Error(), "alice", "X"), strings.ReplaceAll(unknown.Error(), "nobody", "X"); a != b {
		t.Errorf("a wrong password and an unknown user are told apart:\n%s\n%s", a, b)
	}
	// Raw gRPC: the status code is Unauthenticated.
	rpc, _ := rawBroker(t, addr, "", "")
	ctx := testCtx(t)
	_, err := rpc.Metadata(ctx, &ferryv1.MetadataRequest{})
	wantCode(t, "metadata without credentials", err, codes.Unauthenticated, "requires authentication")
	// A produce without credentials stores nothing.
	admin := mustDialAs(t, addr, "admin", "admin-pw")
	offs, err := admin.GetOffsets(ctx, "", []*ferryv1.QueueRef{{Topic: "other", Queue: 0}})
	if err != nil || offs[0].End != 0 {
		t.Fatalf("offsets of other: %v, %v", offs, err)
	}
}

// Users produce and consume where their policies allow it; elsewhere the
// node answers PermissionDenied naming user, action and resource. A Deny
// entry wins over an Allow that matches too; a super user may do anything.
func TestAuthPermissions(t *testing.T) {
	addr := aclNode(t, "ring")
	ctx := testCtx(t)
	alice := mustDialAs(t, addr, "alice", "alice-pw")
	if err := send(ctx, alice, "orders.eu", "from alice"); err != nil {
		t.Fatalf("alice produces to orders.eu (Topic:orders.* allows it): %v", err)
	}
	got := consume(t, alice, client.ConsumerOptions{Topic: "orders.eu", Group: "billing"}, nil, atLeast(1))
	if string(got[0].Body) != "from alice" {
		t.Fatalf("alice consumed %q", got[0].Body)
	}

	// The producer's route lookup is refused already.
	err := send(ctx, alice, "other", "x")
	if !errors.Is(err, sdk.ErrPermissionDenied) || !strings.Contains(err.Error(), `user "alice" may not Pub|Sub|Get on Topic:other`) {
		t.Fatalf("alice produces to other: %v; want PermissionDenied naming user, action and resource", err)
	}
	err = send(ctx, alice, "orders.secret", "x")
	if !errors.Is(err, sdk.ErrPermissionDenied) || !strings.Contains(err.Error(), "Topic:orders.secret") {
		t.Fatalf("alice produces to orders.secret (Allow orders.*, Deny orders.secret): %v; want PermissionDenied", err)
	}
	cons, err := alice.NewConsumer(client.ConsumerOptions{Topic: "orders.eu", Group: "other-group"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cons.Run(ctx, func(context.Context, *ferryv1.Message) error { return nil }); !errors.Is(err, sdk.ErrPermissionDenied) || !strings.Contains(err.Error(), "Group:other-group") {
		t.Fatalf("alice consumes in a group she has no rights on: %v; want PermissionDenied on Group:other-group", err)
	}
	if _, err := alice.CreateTopic(ctx, "orders.new", 1); !errors.Is(err, sdk.ErrPermissionDenied) || !strings.Contains(err.Error(), "Create on Topic:orders.new") {
		t.Fatalf("alice creates a topic: %v; want PermissionDenied (Create)", err)
	}
	// Raw gRPC: a produce to a known queue is refused with the code
	// PERMISSION_DENIED, and a fetch with the status PermissionDenied.
	rpc, as := rawBroker(t, addr, "alice", "alice-pw")
	stream, err := rpc.Produce(as(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&ferryv1.ProduceRequest{Seq: 1, Messages: []*ferryv1.Message{{Id: "x-1", Topic: "other", Queue: 0, Body: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	pr, err := stream.Recv()
	if err != nil || pr.GetError().GetCode() != "PERMISSION_DENIED" || !strings.Contains(pr.GetError().GetMessage(), `user "alice" may not Pub on Topic:other`) {
		t.Fatalf("raw produce to other: %v, %v; want PERMISSION_DENIED naming Pub on Topic:other", pr, err)
	}
	_ = stream.CloseSend()
	pos := []*ferryv1.FetchPosition{{Queue: 0}}
	for _, tc := range []struct {
		what, want string
		call       func() error
	}{
		{"fetch other", `user "alice" may not Sub on Topic:other`, func() error {
			_, err := rpc.Fetch(as(ctx), &ferryv1.FetchRequest{Topic: "other", Positions: pos, MaxMessages: 1})
			return err
		}},
		{"fetch in another group", "Sub on Group:other-group", func() error {
			_, err := rpc.Fetch(as(ctx), &ferryv1.FetchRequest{Topic: "orders.eu", Group: "other-group", Positions: pos, MaxMessages: 1})
			return err
		}},
		{"commit another group", "Sub on Group:other-group", func() error {
			_, err := rpc.CommitOffsets(as(ctx), &ferryv1.CommitOffsetsRequest{Group: "other-group", Offsets: []*ferryv1.GroupOffset{{Topic: "orders.eu", Queue: 0, Offset: 1}}})
			return err
		}},
		{"commit on other", "Sub on Topic:other", func() error {
			_, err := rpc.CommitOffsets(as(ctx), &ferryv1.CommitOffsetsRequest{Group: "billing", Offsets: []*ferryv1.GroupOffset{{Topic: "other", Queue: 0, Offset: 1}}})
			return err
		}},
		{"offsets of another group", "Sub|Get on Group:other-group", func() error {
			_, err := rpc.GetOffsets(as(ctx), &ferryv1.GetOffsetsRequest{Group: "other-group", Queues: []*ferryv1.QueueRef{{Topic: "orders.eu"}}})
			return err
		}},
		{"offsets of other", "Sub|Get on Topic:other", func() error {
			_, err := rpc.GetOffsets(as(ctx), &ferryv1.GetOffsetsRequest{Group: "billing", Queues: []*ferryv1.QueueRef{{Topic: "other"}}})
			return err
		}},
		{"heartbeat on other", "Sub on Topic:other", func() error {
			_, err := rpc.Heartbeat(as(ctx), &ferryv1.HeartbeatRequest{Group: "billing", Member: "m", Topics: []string{"other"}})
			return err
		}},
		{"metadata of other", "Pub|Sub|Get on Topic:other", func() error {
			_, err := rpc.Metadata(as(ctx), &ferryv1.MetadataRequest{Topics: []string{"other"}})
			return err
		}},
		{"alter a topic", "Update on Topic:orders.eu", func() error {
			_, err := rpc.AlterTopic(as(ctx), &ferryv1.AlterTopicRequest{Name: "orders.eu", Queues: 4})
			return err
		}},
		{"delete a topic", "Delete on Topic:orders.eu", func() error {
			_, err := rpc.DeleteTopic(as(ctx), &ferryv1.DeleteTopicRequest{Name: "orders.eu", Force: true})
			return err
		}},
		{"describe another group", "Get on Group:other-group", func() error {
			_, err := rpc.DescribeGroup(as(ctx), &ferryv1.DescribeGroupRequest{Group: "other-group"})
			return err
		}},
		{"reset her group", "Update on Group:billing", func() error {
			_, err := rpc.ResetOffsets(as(ctx), &ferryv1.ResetOffsetsRequest{Group: "billing", Topic: "orders.eu", Force: true})
			return err
		}},
		{"delete her group", "Delete on Group:billing", func() error {
			_, err := rpc.DeleteGroup(as(ctx), &ferryv1.DeleteGroupRequest{Group: "billing"})
			return err
		}},
	} {
		wantCode(t, "alice: "+tc.what, tc.call(), codes.PermissionDenied, tc.want)
	}
	// Metadata lists only what she may see.
	md, err := alice.Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tp := range md.Topics {
		names = append(names, tp.Name)
	}
	if strings.Join(names, ",") != "orders.eu,orders.secret" && strings.Join(names, ",") != "orders.secret,orders.eu" {
		t.Errorf("alice's metadata lists %v; want orders.eu and orders.secret only", names)
	}

	// Groups: she describes her own; a listing shows only the groups she
	// has rights on, the super user's all of them.
	if _, err := rpc.DescribeGroup(as(ctx), &ferryv1.DescribeGroupRequest{Group: "billing"}); err != nil {
		t.Fatalf("alice describes billing (Get on Group:billing): %v", err)
	}
	aliceGroups, err := rpc.ListGroups(as(ctx), &ferryv1.ListGroupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	rpcAdmin, asAdmin := rawBroker(t, addr, "admin", "admin-pw")
	if _, err := rpcAdmin.CommitOffsets(asAdmin(ctx), &ferryv1.CommitOffsetsRequest{Group: "audit", Offsets: []*ferryv1.GroupOffset{{Topic: "other", Queue: 0, Offset: 0}}}); err != nil {
		t.Fatal(err)
	}
	adminGroups, err := rpcAdmin.ListGroups(asAdmin(ctx), &ferryv1.ListGroupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	groupNames := func(r *ferryv1.ListGroupsResponse) (out []string) {
		for _, g := range r.Groups {
			out = append(out, g.Name)
		}
		return out
	}
	if a, all := groupNames(aliceGroups), groupNames(adminGroups); slices.Contains(a, "audit") || !slices.Contains(a, "billing") || !slices.Contains(all, "audit") || !slices.Contains(all, "billing") {
		t.Errorf("groups listed: alice %v, admin %v; want alice without audit, admin with both", a, all)
	}

	admin := mustDialAs(t, addr, "admin", "admin-pw")
	if err := send(ctx, admin, "other", "from admin"); err != nil {
		t.Fatalf("super user produces to other: %v", err)
	}
	if _, err := admin.CreateTopic(ctx, "fresh", 1); err != nil {
		t.Fatalf("super user creates a topic: %v", err)
	}
	md, err = admin.Metadata(ctx)
	if err != nil || len(md.Topics) != 4 {
		t.Fatalf("super user's metadata: %v, %v; want all 4 topics", md, err)
	}
}

// A group's dead-letter and retry topics belong to the group: a user who
// may produce to every topic still cannot forge a dead letter for a group
// it has no rights on, and only a user with Delete on the group may purge
// its dead letters.
func TestAuthDeadLettersBelongToTheirGroup(t *testing.T) {
	addr := aclNode(t, "ring")
	ctx := testCtx(t)
	bob := mustDialAs(t, addr, "bob", "bob-pw") // All on Topic:*
	if err := send(ctx, bob, "other", "fine"); err != nil {
		t.Fatalf("bob produces to other: %v", err)
	}
	for _, topic := range []string{sdk.DLQTopic("billing"), sdk.RetryTopic("billing")} {
		err := send(ctx, bob, topic, "forged")
		if !errors.Is(err, sdk.ErrPermissionDenied) || !strings.Contains(err.Error(), "Group:billing") {
			t.Fatalf("bob produces to %s: %v; want PermissionDenied on Group:billing", topic, err)
		}
	}
	if _, err := bob.DLQ(ctx, "billing"); !errors.Is(err, sdk.ErrPermissionDenied) {
		t.Fatalf("bob lists billing's dead letters: %v; want PermissionDenied", err)
	}
	// The group exists once it consumed.
	alice := mustDialAs(t, addr, "alice", "alice-pw") // Sub on Group:billing, no Delete
	if err := send(ctx, alice, "orders.eu", "m"); err != nil {
		t.Fatal(err)
	}
	consume(t, alice, client.ConsumerOptions{Topic: "orders.eu", Group: "billing"}, nil, atLeast(1))
	admin := mustDialAs(t, addr, "admin", "admin-pw")
	if err := send(ctx, admin, sdk.DLQTopic("billing"), "a dead letter"); err != nil {
		t.Fatalf("super user writes billing's dead-letter queue: %v", err)
	}
	st, err := admin.DLQ(ctx, "billing")
	if err != nil || st.Depth() != 1 {
		t.Fatalf("billing's dead letters: %+v, %v; want 1 (bob's forgeries refused)", st, err)
	}
	if _, _, err := alice.DeadLetters(ctx, "billing", 10); err != nil {
		t.Fatalf("alice reads billing's dead letters (Sub on the group): %v", err)
	}
	if _, err := bob.PurgeDeadLetters(ctx, "billing", 1); !errors.Is(err, sdk.ErrPermissionDenied) || !strings.Contains(err.Error(), "Group:billing") {
		t.Fatalf("bob purges billing's dead letters: %v; want PermissionDenied on Group:billing", err)
	}
	if _, err := alice.PurgeDeadLetters(ctx, "billing", 1); !errors.Is(err, sdk.ErrPermissionDenied) || !strings.Contains(err.Error(), "Delete on Group:billing") {
		t.Fatalf("alice purges billing's dead letters: %v; want PermissionDenied (Delete on Group:billing)", err)
	}
	if n, err := admin.PurgeDeadLetters(ctx, "billing", 1); err != nil || n != 1 {
		t.Fatalf("super user purges: %d, %v", n, err)
	}
}

// A member of a group is bound to the user whose consumer heartbeats it:
// another user, even one with Sub on the group, cannot heartbeat it, make
// it leave or take it over; a user without rights on the group cannot join
// it at all.
func TestAuthHeartbeatsCannotBeForged(t *testing.T) {
	addr := aclNode(t, "grpc")
	ctx := testCtx(t)
	rpc, alice := rawBroker(t, addr, "alice", "alice-pw")
	_, mallory := rawBroker(t, addr, "mallory", "mallory-pw")
	_, bob := rawBroker(t, addr, "bob", "bob-pw")
	hb := func(as func(context.Context) context.Context, member string, leave bool) (*ferryv1.HeartbeatResponse, error) {
		return rpc.Heartbeat(as(ctx), &ferryv1.HeartbeatRequest{Group: "billing", Member: member, Topics: []string{"orders.eu"}, Leave: leave, SessionTimeoutNanos: int64(time.Minute)})
	}
	if _, err := hb(alice, "alice-1", false); err != nil {
		t.Fatalf("alice heartbeats her member: %v", err)
	}
	_, err := hb(mallory, "alice-1", true)
	wantCode(t, "mallory makes alice's member leave", err, codes.PermissionDenied, `member "alice-1" of group "billing"`)
	_, err = hb(mallory, "alice-1", false)
	wantCode(t, "mallory heartbeats alice's member", err, codes.PermissionDenied, `user "mallory" may not heartbeat member "alice-1"`)
	_, err = hb(bob, "bob-1", false)
	wantCode(t, "bob joins billing", err, codes.PermissionDenied, `user "bob" may not Sub on Group:billing`)
	// mallory may join under a member id of her own (she has Sub on the
	// group); alice's member is still there.
	resp, err := hb(mallory, "mallory-1", false)
	if err != nil {
		t.Fatalf("mallory heartbeats her own member: %v", err)
	}
	if strings.Join(resp.Members, ",") != "alice-1,mallory-1" {
		t.Fatalf("members = %v; want alice-1 and mallory-1", resp.Members)
	}
	// Once alice's member leaves, its id is free.
	if _, err := hb(alice, "alice-1", true); err != nil {
		t.Fatalf("alice leaves: %v", err)
	}
	if _, err := hb(mallory, "alice-1", false); err != nil {
		t.Fatalf("mallory takes the id alice left: %v", err)
	}
}

// Failed authentications from one address are limited: past the bucket's
// burst the node refuses that address without checking its credentials,
// while credentials it verified before keep working; every failure is
// logged.
func TestAuthFailedAttemptsAreRateLimited(t *testing.T) {
	addr, logs := startSecureNode(t, fmt.Sprintf(`name: limit
node: {data_dir: DIR}
plugins:
  data_plane: grpc
  transport: {type: grpc, config: {listen: ADDR, shutdown_timeout: 200ms}}
topics: [{name: t, queues: 1}]
security:
  failed_auth: {burst: 3, refill: 1h}
  users:
    - name: app
      password_hash: %q
      policies: [{resources: ["*"], actions: [All]}]
`, hashOf(t, "app-pw")))
	ctx := testCtx(t)
	good := mustDialAs(t, addr, "app", "app-pw")
	for i := range 3 {
		if _, err := dialAs(t, addr, "app", fmt.Sprintf("guess-%d", i)); err == nil || !strings.Contains(err.Error(), "wrong password") {
			t.Fatalf("guess %d: %v; want wrong password", i, err)
		}
	}
	_, err := dialAs(t, addr, "app", "guess-4")
	if !errors.Is(err, sdk.ErrUnauthenticated) || !strings.Contains(err.Error(), "too many failed authentication attempts from 127.0.0.1") {
		t.Fatalf("4th guess: %v; want refused as too many failed attempts", err)
	}
	// Even the right password, not verified before, waits now...
	if _, err := dialAs(t, addr, "app", "app-pw-new"); err == nil || !strings.Contains(err.Error(), "too many failed") {
		t.Fatalf("new credentials from a limited address: %v; want refused", err)
	}
	// ...but a client that proved itself earlier goes on.
	if err := send(ctx, good, "t", "still works"); err != nil {
		t.Fatalf("verified client after the limit: %v", err)
	}
	if n := strings.Count(logs.String(), "authentication failed"); n < 4 {
		t.Errorf("%d failures logged, want at least 4:\n%s", n, logs)
	}
}

// Under mutual TLS a client certificate naming a user with certificate:
// true authenticates as that user; a certificate naming nobody (or a user
// not allowed to use one) is refused, and a password still works.
func TestAuthClientCertificateIsThePrincipal(t *testing.T) {
	ca := securitytest.NewCA(t, "auth")
	srv := ca.Issue("broker", securitytest.Options{})
	app := ca.Issue("app", securitytest.Options{Client: true})
	stranger := ca.Issue("stranger", securitytest.Options{Client: true})
	alice := ca.Issue("alice", securitytest.Options{Client: true})
	addr, _ := startSecureNode(t, fmt.Sprintf(`name: mtls
node: {data_dir: DIR}
plugins:
  transport: {type: grpc, config: {listen: ADDR, shutdown_timeout: 200ms, tls: {cert_file: %q, key_file: %q, client_ca_file: %q}}}
topics: [{name: t, queues: 1}, {name: u, queues: 1}]
security:
  users:
    - name: app
      certificate: true
      policies: [{resources: ["Topic:t"], actions: [Pub, Get]}]
    - name: alice
      password_hash: %q
      policies: [{resources: ["Topic:u"], actions: [Pub]}]
`, srv.CertFile, srv.KeyFile, ca.CertFile, hashOf(t, "alice-pw")))
	ctx := testCtx(t)
	c := mustDialAs(t, addr, "", "", client.WithTLS(ca.CertFile, app.CertFile, app.KeyFile))
	if err := send(ctx, c, "t", "by certificate"); err != nil {
		t.Fatalf("app (by its certificate) produces to t: %v", err)
	}
	if err := send(ctx, c, "u", "x"); !errors.Is(err, sdk.ErrPermissionDenied) || !strings.Contains(err.Error(), `user "app"`) {
		t.Fatalf("app produces to u: %v; want PermissionDenied for user app", err)
	}
	for _, p := range []securitytest.Pair{stranger, alice} {
		if _, err := dialAs(t, addr, "", "", client.WithTLS(ca.CertFile, p.CertFile, p.KeyFile)); !errors.Is(err, sdk.ErrUnauthenticated) || !strings.Contains(err.Error(), "names no user") {
			t.Fatalf("certificate %s: %v; want ErrUnauthenticated (names no user that may authenticate by certificate)", p.CertFile, err)
		}
	}
	// A password over mutual TLS authenticates its user, whatever the certificate.
	ca2 := mustDialAs(t, addr, "alice", "alice-pw", client.WithTLS(ca.CertFile, stranger.CertFile, stranger.KeyFile))
	if err := send(ctx, ca2, "u", "by password"); err != nil {
		t.Fatalf("alice by password over mutual TLS: %v", err)
	}
}

// The client library refuses to send a password in plaintext to a broker
// that is not on loopback.
func TestCredentialsNeedTLSBeyondLoopback(t *testing.T) {
	var ip string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			ip = n.IP.String()
			break
		}
	}
	if ip == "" {
		t.Skip("no non-loopback IPv4 address")
	}
	b := startBroker(t, newMemCore(map[string]int32{"t": 1}), "0.0.0.0:0")
	_, port, _ := net.SplitHostPort(b.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, net.JoinHostPort(ip, port), client.WithLogger(quiet), client.WithCredentials("app", "secret"))
	if err == nil {
		c.Close()
		t.Fatal("dial with plaintext credentials to a non-loopback address succeeded")
	}
	if !errors.Is(err, sdk.ErrUnauthenticated) || !strings.Contains(err.Error(), "refusing to send the password in plaintext") {
		t.Fatalf("plaintext credentials to a remote broker: %v; want a refusal naming TLS", err)
	}
	// The control: the same broker on loopback takes them.
	c, err = client.Dial(ctx, net.JoinHostPort("127.0.0.1", port), client.WithLogger(quiet), client.WithCredentials("app", "secret"))
	if err != nil {
		t.Fatalf("plaintext credentials on loopback: %v", err)
	}
	c.Close()
}

// logLine waits for a line of logs holding every one of parts and returns
// it; it fails the test after a generous deadline.
func logLine(t *testing.T, logs *syncBuffer, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, line := range strings.Split(logs.String(), "\n") {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with all of %q in:\n%s", parts, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The node's log is its audit log: one structured line for every allowed
// admin action (who, from where, what, on what, how it ended), every
// denied request and every failed authentication with its source. A
// denied admin action leaves no "admin action" line, and a data call
// (produce) none either.
func TestAuthAuditLog(t *testing.T) {
	addr, logs := aclNodeLogs(t, "ring")
	ctx := testCtx(t)
	admin := mustDialAs(t, addr, "admin", "admin-pw")
	alice := mustDialAs(t, addr, "alice", "alice-pw")
	if _, err := admin.CreateTopic(ctx, "audited", 1); err != nil {
		t.Fatal(err)
	}
	if err := send(ctx, alice, "orders.eu", "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreateTopic(ctx, "orders.sneaky", 1); !errors.Is(err, sdk.ErrPermissionDenied) {
		t.Fatalf("alice creates a topic: %v; want PermissionDenied", err)
	}
	rpc, as := rawBroker(t, addr, "admin", "admin-pw")
	if _, err := rpc.DeleteTopic(as(ctx), &ferryv1.DeleteTopicRequest{Name: "audited", Force: true}); err != nil {
		t.Fatal(err)
	}
	// A dead letter purged (ferry dlq purge), once the group exists.
	consume(t, alice, client.ConsumerOptions{Topic: "orders.eu", Group: "billing"}, nil, atLeast(1))
	if err := send(ctx, admin, sdk.DLQTopic("billing"), "a dead letter"); err != nil {
		t.Fatal(err)
	}
	if n, err := admin.PurgeDeadLetters(ctx, "billing", 1); err != nil || n != 1 {
		t.Fatalf("super user purges: %d, %v", n, err)
	}
	if _, err := dialAs(t, addr, "alice", "guess"); !errors.Is(err, sdk.ErrUnauthenticated) {
		t.Fatalf("dial with a wrong password: %v", err)
	}

	logLine(t, logs, "audit: admin action", "user=admin", "source=127.0.0.1", "action=Create", "resource=Topic:audited", "result=ok")
	logLine(t, logs, "audit: admin action", "user=admin", "action=Delete", "resource=Topic:audited", "result=ok")
	logLine(t, logs, "audit: admin action", "user=admin", "action=Delete", `resource="Group:%DLQ%billing"`, "result=ok")
	logLine(t, logs, "audit: access denied", "user=alice", "source=127.0.0.1", "action=Create", "resource=Topic:orders.sneaky")
	logLine(t, logs, "audit: authentication failed", "source=127.0.0.1", "user=alice", "wrong password")
	// Negative controls: what was refused or is no admin action is not
	// logged as one.
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "audit: admin action") && (strings.Contains(line, "orders.sneaky") || strings.Contains(line, "orders.eu") || strings.Contains(line, "user=alice")) {
			t.Errorf("logged as an admin action: %s", line)
		}
		// alice's allowed produce and consume on orders.eu are no
		// security event: no audit line at all names them.
		if strings.Contains(line, "audit:") && strings.Contains(line, "orders.eu") {
			t.Errorf("an allowed produce or consume is in the audit log: %s", line)
		}
	}
	if n := strings.Count(logs.String(), "audit: authentication failed"); n != 1 {
		t.Errorf("%d failed authentications logged, want 1 (the wrong password)", n)
	}
}
