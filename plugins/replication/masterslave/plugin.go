package masterslave

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security"
)

// Plugin is the async or sync master–slave replication plugin.
type Plugin struct {
	mode string

	cfg   Config
	peers *security.Peers // the links' TLS and cluster secret
	dir   string
	lis   net.Listener
	srv   *grpc.Server
	core  sdk.ReplicaCore

	mu       sync.Mutex
	st       state
	role     string             // master | slave; "" before Serve decided
	self     string             // node id
	addr     string             // broker address
	stepDown chan struct{}      // closed to end runMaster (a higher epoch exists)
	promote  context.CancelFunc // ends runSlave (promotion)
	// master side
	ends     map[qkey]int64 // end offset of each queue as handed over
	tails    map[qkey]*tail
	okEnds   map[qkey]int64 // ends up to which producers were answered OK
	sessions map[*session]struct{}
	refused  map[string]*ferryv1.ReplicaInfo // diverged slaves, by node
	progress chan struct{}                   // closed and replaced on acks and session changes
	wake     chan struct{}                   // closed and replaced on new data
	// both sides (offsets.go): groups' offsets as the broker reported them
	// (master) or the master sent them (slave), versioned
	offs   map[gqkey]offEntry
	offVer uint64
	// groups deleted (groups.go): group → the offVer it got when deleted;
	// kept for the plugin's life, on a slave as its master sent them
	// and durable (GroupDeletionsFile); applied: group → the id of the
	// deletion made here
	dels    map[string]delEntry
	applied map[string]uint64
	// slave side: deletions from the master not yet made here
	delTodo []string
	// master side (topics.go): the broker's latest topic set, versioned
	topics   *ferryv1.TopicChange
	topicVer uint64
	// slave side
	leader      *ferryv1.ReplicationStatusResponse // the master followed, as it answered
	leaderUp    bool
	leaderEnds  map[qkey]int64  // the master's ends, from its last frame
	leaderAcked map[qkey]int64  // ends the master answered OK, from its last heartbeat
	localEnds   map[qkey]int64  // this node's ends as applied
	offDone     map[gqkey]int64 // group offsets committed here since the link opened
	leaderEpoch uint64
	closed      bool
	peerErrs    map[string]string // the last handshake refusal logged per peer
	closeCtx    context.Context
	closeCancel context.CancelFunc
}

type qkey struct {
	topic string
	queue int32
}

// tail holds the latest messages of one queue, offsets first..first+len-1.
type tail struct {
	first int64
	msgs  []*sdk.Message
}

var (
	_ sdk.Replication     = (*Plugin)(nil)
	_ sdk.ReplicationMode = (*Plugin)(nil)
)

// New returns a plugin of mode ModeAsync or ModeSync.
func New(mode string) *Plugin {
	ctx, cancel := context.WithCancel(context.Background())
	return &Plugin{mode: mode, closeCtx: ctx, closeCancel: cancel,
		ends: map[qkey]int64{}, tails: map[qkey]*tail{}, sessions: map[*session]struct{}{},
		refused: map[string]*ferryv1.ReplicaInfo{}, progress: make(chan struct{}), wake: make(chan struct{}),
		leaderEnds: map[qkey]int64{}, leaderAcked: map[qkey]int64{}, localEnds: map[qkey]int64{}, okEnds: map[qkey]int64{},
		offs: map[gqkey]offEntry{}, offDone: map[gqkey]int64{}, dels: map[string]delEntry{}, applied: map[string]uint64{}}
}

// Mode tells the broker to store first, then replicate: once a batch is
// durable on the master, or once it is written with replicate_before_flush.
func (p *Plugin) Mode() string {
	if p.cfg.ReplicateBeforeFlush {
		return sdk.ModeApplyWritten
	}
	return sdk.ModeApplyFirst
}

// Validate checks a config section.
func (p *Plugin) Validate(config []byte) sdk.Problems {
	_, ps := p.decode(config)
	return ps
}

// Configure binds the replication listener and loads the persisted state.
func (p *Plugin) Configure(_ context.Context, config []byte, env *sdk.Environment) error {
	cfg, ps := p.decode(config)
	if ps != nil {
		return ps
	}
	p.cfg = cfg
	p.dir = filepath.Join(env.GetDataDir(), "replication-"+p.mode)
	st, err := loadState(p.dir)
	if err != nil {
		return fmt.Errorf("replication state in %s: %w", p.dir, err)
	}
	p.st = st
	if err := p.loadDeletions(); err != nil {
		return fmt.Errorf("replication state in %s: %w", p.dir, err)
	}
	pl := cfg.link()
	pl.Node = env.GetNode() // claimed in every link it dials, checked against its certificate
	if p.peers, err = security.NewPeers(pl, "plugins.replication.config.listen", logger); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("replication listen %s: %w", cfg.Listen, err)
	}
	p.lis = lis
	opts := []grpc.ServerOption{grpc.Creds(p.peers.GRPC()), grpc.MaxRecvMsgSize(64 << 20), grpc.MaxSendMsgSize(64 << 20),
		// Windows sized for frames of up to ~1 MiB in flight back to back.
		grpc.InitialWindowSize(8 << 20), grpc.InitialConnWindowSize(16 << 20),
		grpc.ReadBufferSize(256 << 10), grpc.WriteBufferSize(256 << 10)}
	// The SDK's codec: vtprotobuf's encoder and decoder, and buffers that
	// are not zeroed, for the frames of messages shipped to the slaves.
	p.srv = grpc.NewServer(append(opts, sdk.GRPCBufferServerOptions()...)...)
	ferryv1.RegisterReplicaLinkServer(p.srv, &link{p: p})
	go func() { _ = p.srv.Serve(lis) }()
	return nil
}

// Close stops the listener and every link.
func (p *Plugin) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.closeCancel()
	if p.srv != nil {
		p.srv.Stop()
	}
	return nil
}

// Serve decides the node's role and runs it until ctx ends.
func (p *Plugin) Serve(ctx context.Context, core sdk.ReplicaCore) error {
	info, err := core.NodeInfo(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.core = core
	p.self, p.addr = info.Node, info.Address
	role := p.st.Role
	if role == "" {
		role = info.Role
	}
	if role != sdk.RoleSlave {
		role = sdk.RoleMaster
	}
	p.role = role
	p.mu.Unlock()
	for ctx.Err() == nil {
		var err error
		if p.currentRole() == sdk.RoleMaster {
			err = p.runMaster(ctx)
		} else {
			err = p.runSlave(ctx)
		}
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

func (p *Plugin) currentRole() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.role
}

// dial opens a client connection to a peer's replication listener, secured
// as the config says.
func (p *Plugin) dial(addr string) (*grpc.ClientConn, ferryv1.ReplicaLinkClient, error) {
	return p.dialWith(addr, p.peers.GRPC())
}

// dialMaster is dial to a peer this node is to follow: with masters set,
// its certificate must name one of them, or it is refused at the
// handshake, before the Follow stream opens.
func (p *Plugin) dialMaster(addr string) (*grpc.ClientConn, ferryv1.ReplicaLinkClient, error) {
	return p.dialWith(addr, p.peers.GRPCTo(p.cfg.Masters, "masters"))
}

func (p *Plugin) dialWith(addr string, creds credentials.TransportCredentials) (*grpc.ClientConn, ferryv1.ReplicaLinkClient, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
		grpc.WithInitialWindowSize(8 << 20), grpc.WithInitialConnWindowSize(16 << 20),
		grpc.WithReadBufferSize(256 << 10), grpc.WithWriteBufferSize(256 << 10)}
	cc, err := grpc.NewClient(addr, append(opts, sdk.GRPCBufferDialOptions()...)...) // the server's codec (Configure)
	if err != nil {
		return nil, nil, err
	}
	return cc, ferryv1.NewReplicaLinkClient(cc), nil
}

// peerStatus asks every peer for its status, within 1 s each; peers that do
// not answer are left out.
func (p *Plugin) peerStatus(ctx context.Context) map[string]*ferryv1.ReplicationStatusResponse {
	out := map[string]*ferryv1.ReplicationStatusResponse{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range p.cfg.Peers {
		wg.Go(func() {
			cc, rpc, err := p.dial(a)
			if err != nil {
				return
			}
			defer cc.Close()
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			var pr peer.Peer
			st, err := rpc.Status(cctx, &ferryv1.ReplicationStatusRequest{}, grpc.Peer(&pr))
			if err == nil {
				// A peer is taken for the node it says it is (a master
				// to follow, say) only if its certificate names it.
				err = p.peers.CheckAnswer(&pr, a, st.Node)
			}
			if err == nil && st.Role == sdk.RoleMaster {
				// and for a master only if masters lists it.
				err = p.mayFollow(a, st.Node)
			}
			p.peerRefused(a, err)
			if err != nil {
				return
			}
			mu.Lock()
			out[a] = st
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// mayFollow checks that node, answering at addr as a master, is one of
// the config's masters (any node when it lists none): a *PeerError
// naming both otherwise.
func (p *Plugin) mayFollow(addr, node string) error {
	if len(p.cfg.Masters) == 0 || slices.Contains(p.cfg.Masters, node) {
		return nil
	}
	return &security.PeerError{Peer: addr, Reason: fmt.Sprintf("the peer answers as master node %q, which is not among the masters this node may follow (masters: %s): not followed",
		node, quoted(p.cfg.Masters))}
}

func quoted(ids []string) string {
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = strconv.Quote(id)
	}
	return strings.Join(q, ", ")
}

// Status reports this node for the broker's host (and `ferry cluster`).
func (p *Plugin) Status(context.Context) (*sdk.ReplicationStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := &ferryv1.ReplicationStatusResponse{Node: p.self, Role: p.role, Address: p.addr, Epoch: p.st.Epoch, Mode: p.mode}
	if p.role == sdk.RoleMaster {
		st.LeaderNode, st.LeaderAddress, st.LeaderConnected = p.self, p.addr, true
		st.Offsets = offsetsOf(p.ends)
		for s := range p.sessions {
			st.Replicas = append(st.Replicas, &ferryv1.ReplicaInfo{Node: s.node, Address: s.addr, Connected: true,
				Lag: p.lagLocked(s.acked), Detail: s.warning})
		}
		for _, r := range p.refused {
			st.Replicas = append(st.Replicas, r)
		}
		sort.Slice(st.Replicas, func(i, j int) bool { return st.Replicas[i].Node < st.Replicas[j].Node })
	} else {
		st.Offsets = offsetsOf(p.localEnds)
		if p.leader != nil {
			st.LeaderNode, st.LeaderAddress = p.leader.Node, p.leader.Address
		}
		st.LeaderConnected = p.leaderUp
		lag := int64(0)
		for k, e := range p.leaderEnds {
			if d := e - p.localEnds[k]; d > 0 {
				lag += d
			}
		}
		st.Replicas = []*ferryv1.ReplicaInfo{{Node: p.self, Address: p.addr, Connected: p.leaderUp, Lag: lag}}
	}
	return st, nil
}

// lagLocked is how many messages a replica with the given ends lacks.
func (p *Plugin) lagLocked(acked map[qkey]int64) int64 {
	lag := int64(0)
	for k, e := range p.ends {
		if d := e - acked[k]; d > 0 {
			lag += d
		}
	}
	return lag
}

func offsetsOf(m map[qkey]int64) []*ferryv1.QueueOffsets {
	out := make([]*ferryv1.QueueOffsets, 0, len(m))
	for k, e := range m {
		out = append(out, &ferryv1.QueueOffsets{Topic: k.topic, Queue: k.queue, End: e, Committed: -1})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Queue < out[j].Queue
	})
	return out
}

func endsOf(offs []*ferryv1.QueueOffsets) map[qkey]int64 {
	m := make(map[qkey]int64, len(offs))
	for _, o := range offs {
		m[qkey{o.Topic, o.Queue}] = o.End
	}
	return m
}

// link serves ReplicaLink: slaves following this node, peers and `ferry
// cluster` asking for its status, and promotion.
type link struct {
	ferryv1.UnimplementedReplicaLinkServer
	p *Plugin
}

func (l *link) Status(ctx context.Context, _ *ferryv1.ReplicationStatusRequest) (*ferryv1.ReplicationStatusResponse, error) {
	return l.p.Status(ctx)
}

// errNotMaster is returned to slaves that try to follow a node that is not
// master (now).
var errNotMaster = errors.New("not master")

// peerRefused logs a peer's refusal of a link (or this node's of it), once
// per peer until the reason changes or a call succeeds: a node that cannot
// link says why instead of silently finding no master.
func (p *Plugin) peerRefused(addr string, err error) {
	reason := ""
	var pe *security.PeerError
	if err != nil && (errors.As(err, &pe) || strings.Contains(err.Error(), "replication peer ")) {
		reason = err.Error()
		if st, ok := status.FromError(err); ok {
			reason = st.Message()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.peerErrs == nil {
		p.peerErrs = map[string]string{}
	}
	if p.peerErrs[addr] == reason {
		return
	}
	p.peerErrs[addr] = reason
	if reason != "" {
		logger.Warn("replication link to peer refused", "peer", addr, "reason", reason)
	} else if err == nil {
		logger.Info("replication link to peer secured", "peer", addr, "tls", p.peers.Secure())
	}
}
