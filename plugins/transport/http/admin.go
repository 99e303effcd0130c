package httptransport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// This file serves the Broker API's admin calls as JSON: topics (create,
// alter, delete, list, describe) and consumer groups (list, describe, reset
// offsets, delete). docs/http.md lists the endpoints. Each is one call of
// the core's sdk.TopicAdmin or sdk.GroupAdmin; a core without them answers
// 501 UNSUPPORTED.

func (a *api) adminRoutes(mux *http.ServeMux) {
	mux.Handle("/v1/topics", methods{http.MethodGet: a.listTopics, http.MethodPost: a.createTopic})
	mux.Handle("/v1/topics/{topic}", methods{http.MethodGet: a.describeTopic, http.MethodPatch: a.alterTopic, http.MethodDelete: a.deleteTopic})
	mux.Handle("/v1/groups", methods{http.MethodGet: a.listGroups})
	mux.Handle("/v1/groups/{group}", methods{http.MethodGet: a.describeGroup, http.MethodDelete: a.deleteGroup})
	mux.Handle("/v1/groups/{group}/reset", methods{http.MethodPost: a.resetOffsets})
}

type (
	topicOut struct {
		Name   string          `json:"name"`
		Queues int32           `json:"queues"`
		Detail []topicQueueOut `json:"queue_offsets,omitempty"`
		Groups []string        `json:"groups,omitempty"`
		// Bytes the store holds for the topic, the sum of its queues'
		// (describe only); BytesUnknown when the store cannot size some
		// queue, and then Bytes is absent (unknown, not 0), as in
		// `ferry topic describe --json`.
		Bytes        *int64 `json:"bytes,omitempty"`
		BytesUnknown bool   `json:"bytes_unknown,omitempty"`
		// The topic's own settings; absent when it has none.
		Settings *settingsJSON `json:"settings,omitempty"`
	}
	// settingsJSON are a topic's own settings (docs/http.md): sizes in
	// bytes, the age as a Go duration ("24h"). In an alter an absent or 0
	// field keeps the topic's, -1 (the age: "default") unsets it.
	settingsJSON struct {
		RetentionBytes  int64  `json:"retention_bytes,omitempty"`
		RetentionAge    string `json:"retention_age,omitempty"`
		MaxMessageBytes int64  `json:"max_message_bytes,omitempty"`
	}
	topicQueueOut struct {
		Queue int32 `json:"queue"`
		Start int64 `json:"start"`
		End   int64 `json:"end"`
		// Bytes the store holds for the queue; absent when it cannot say.
		Bytes *int64 `json:"bytes,omitempty"`
	}
	createTopicIn struct {
		Name     string        `json:"name"`
		Queues   int32         `json:"queues"`
		Settings *settingsJSON `json:"settings"`
	}
	alterTopicIn struct {
		Queues   int32         `json:"queues"`
		Settings *settingsJSON `json:"settings"`
	}
	groupSummaryOut struct {
		Name    string   `json:"name"`
		Members int32    `json:"members"`
		Topics  []string `json:"topics"`
		Lag     int64    `json:"lag"`
	}
	groupMemberOut struct {
		ID                    string        `json:"id"`
		Topics                []string      `json:"topics"`
		Queues                []queueRefOut `json:"queues"`
		LastHeartbeatUnixNano int64         `json:"last_heartbeat_unix_nano"`
		ExpiresUnixNano       int64         `json:"expires_unix_nano"`
	}
	queueRefOut struct {
		Topic string `json:"topic"`
		Queue int32  `json:"queue"`
	}
	groupQueueOut struct {
		Topic     string `json:"topic"`
		Queue     int32  `json:"queue"`
		Start     int64  `json:"start"`
		End       int64  `json:"end"`
		Committed int64  `json:"committed"`
		Lag       int64  `json:"lag"`
		Member    string `json:"member,omitempty"`
	}
	internalOut struct {
		Topic    string `json:"topic"`
		Messages int64  `json:"messages"`
	}
	groupOut struct {
		Group    string           `json:"group"`
		Members  []groupMemberOut `json:"members"`
		Queues   []groupQueueOut  `json:"queues"`
		Internal []internalOut    `json:"internal_topics"`
	}
	resetIn struct {
		Topic  string  `json:"topic"`
		To     string  `json:"to"` // earliest, latest, offset, time
		Offset *int64  `json:"offset,omitempty"`
		Time   string  `json:"time,omitempty"` // RFC 3339
		Queues []int32 `json:"queues,omitempty"`
		Force  bool    `json:"force,omitempty"`
		DryRun bool    `json:"dry_run,omitempty"`
	}
	resetQueueOut struct {
		Topic     string `json:"topic"`
		Queue     int32  `json:"queue"`
		Previous  int64  `json:"previous"`
		Committed int64  `json:"committed"`
	}
)

// topicAdmin and groupAdmin are the core's admin calls, or the error to
// answer.
func (a *api) topicAdmin() (sdk.TopicAdmin, error) {
	if t, ok := a.core.(sdk.TopicAdmin); ok {
		return t, nil
	}
	return nil, fmt.Errorf("%w: this broker core has no topic administration", errors.ErrUnsupported)
}

func (a *api) groupAdmin() (sdk.GroupAdmin, error) {
	if g, ok := a.core.(sdk.GroupAdmin); ok {
		return g, nil
	}
	return nil, fmt.Errorf("%w: this broker core has no group administration", errors.ErrUnsupported)
}

// decodeBody reads the request's JSON object into v: unknown fields and
// anything after the object are refused; shape says what is expected.
func (a *api) decodeBody(w http.ResponseWriter, r *http.Request, v any, shape string) error {
	body, release, err := a.lim.readBody(w, r)
	defer release()
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("body is not %s: %v", shape, err)
	}
	if off := dec.InputOffset(); len(bytes.TrimSpace(body[off:])) > 0 {
		return badRequest("the JSON body has more after its object (at byte %d): send one %s", off, shape)
	}
	return nil
}

// boolParam reads the query parameter name as a boolean (absent: false).
func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("%s=%q: want true or false", name, v)
	}
	return b, nil
}

// listTopics answers GET /v1/topics.
func (a *api) listTopics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := a.timeout(r)
	defer cancel()
	resp, err := a.core.Metadata(ctx, &sdk.MetadataRequest{})
	if err != nil {
		fail(w, err)
		return
	}
	out := struct {
		Topics []topicOut `json:"topics"`
	}{Topics: []topicOut{}}
	for _, t := range resp.Topics {
		out.Topics = append(out.Topics, topicOut{Name: t.Name, Queues: t.Queues})
	}
	writeJSON(w, http.StatusOK, out)
}

// createTopic answers POST /v1/topics {"name","queues"} with 201 and the
// topic.
func (a *api) createTopic(w http.ResponseWriter, r *http.Request) {
	var in createTopicIn
	if err := a.decodeBody(w, r, &in, `a topic {"name","queues"}`); err != nil {
		fail(w, err)
		return
	}
	if err := checkName("topic", in.Name); err != nil {
		fail(w, err)
		return
	}
	admin, err := a.topicAdmin()
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	settings, err := in.Settings.proto()
	if err != nil {
		fail(w, err)
		return
	}
	resp, err := admin.CreateTopic(ctx, &sdk.CreateTopicRequest{Name: in.Name, Queues: in.Queues, Settings: settings})
	if err != nil {
		fail(w, err)
		return
	}
	a.forgetTopic(in.Name)
	writeJSON(w, http.StatusCreated, topicOut{Name: resp.Topic.GetName(), Queues: resp.Topic.GetQueues(), Settings: settingsOut(resp.Topic.GetSettings())})
}

// alterTopic answers PATCH /v1/topics/{topic} {"queues"}.
func (a *api) alterTopic(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := checkName("topic", topic); err != nil {
		fail(w, err)
		return
	}
	var in alterTopicIn
	if err := a.decodeBody(w, r, &in, `a change {"queues"}`); err != nil {
		fail(w, err)
		return
	}
	admin, err := a.topicAdmin()
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	settings, err := in.Settings.proto()
	if err != nil {
		fail(w, err)
		return
	}
	resp, err := admin.AlterTopic(ctx, &sdk.AlterTopicRequest{Name: topic, Queues: in.Queues, Settings: settings})
	if err != nil {
		fail(w, err)
		return
	}
	a.forgetTopic(topic)
	writeJSON(w, http.StatusOK, topicOut{Name: resp.Topic.GetName(), Queues: resp.Topic.GetQueues(), Settings: settingsOut(resp.Topic.GetSettings())})
}

// deleteTopic answers DELETE /v1/topics/{topic}[?force=true].
func (a *api) deleteTopic(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := checkName("topic", topic); err != nil {
		fail(w, err)
		return
	}
	force, err := boolParam(r, "force")
	if err != nil {
		fail(w, err)
		return
	}
	admin, err := a.topicAdmin()
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	resp, err := admin.DeleteTopic(ctx, &sdk.DeleteTopicRequest{Name: topic, Force: force})
	if err != nil {
		fail(w, err)
		return
	}
	a.forgetTopic(topic)
	groups := resp.Groups
	if groups == nil {
		groups = []string{}
	}
	writeJSON(w, http.StatusOK, struct {
		Name    string   `json:"name"`
		Deleted bool     `json:"deleted"`
		Groups  []string `json:"groups"`
	}{topic, true, groups})
}

// describeTopic answers GET /v1/topics/{topic}: its queues' offsets and
// bytes, and the groups that consume it.
func (a *api) describeTopic(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := checkName("topic", topic); err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	md, err := a.core.Metadata(ctx, &sdk.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		fail(w, err)
		return
	}
	var queues int32 = -1
	var settings *sdk.TopicSettings
	for _, t := range md.Topics {
		if t.Name == topic {
			queues, settings = t.Queues, t.Settings
		}
	}
	if queues < 0 {
		fail(w, fmt.Errorf("%w: unknown topic %q", sdk.ErrNotFound, topic))
		return
	}
	refs := make([]*sdk.QueueRef, queues)
	for q := range queues {
		refs[q] = &sdk.QueueRef{Topic: topic, Queue: q}
	}
	offs, err := a.core.GetOffsets(ctx, &sdk.GetOffsetsRequest{Queues: refs, WithBytes: true})
	if err != nil {
		fail(w, err)
		return
	}
	out := topicOut{Name: topic, Queues: queues, Detail: []topicQueueOut{}, Groups: []string{}, Settings: settingsOut(settings)}
	var total int64
	for _, o := range offs.Offsets {
		out.Detail = append(out.Detail, topicQueueOut{Queue: o.Queue, Start: o.Start, End: o.End, Bytes: o.Bytes})
		if o.Bytes == nil {
			out.BytesUnknown = true
		} else {
			total += *o.Bytes
		}
	}
	if !out.BytesUnknown {
		out.Bytes = &total
	}
	if admin, err := a.groupAdmin(); err == nil {
		gs, err := admin.ListGroups(ctx, &sdk.ListGroupsRequest{})
		if err != nil {
			fail(w, err)
			return
		}
		for _, g := range gs.Groups {
			if slices.Contains(g.Topics, topic) {
				out.Groups = append(out.Groups, g.Name)
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// proto is the settings of a create or alter body (nil: none).
func (j *settingsJSON) proto() (*sdk.TopicSettings, error) {
	if j == nil {
		return nil, nil
	}
	s := &sdk.TopicSettings{RetentionBytes: j.RetentionBytes, MaxMessageBytes: j.MaxMessageBytes}
	switch j.RetentionAge {
	case "", "0":
	case "default":
		s.RetentionAgeNanos = -1
	default:
		d, err := time.ParseDuration(j.RetentionAge)
		if err != nil || d <= 0 {
			return nil, badRequest("settings.retention_age: want a duration above 0 such as \"24h\" (or \"default\" in an alter), got %q", j.RetentionAge)
		}
		s.RetentionAgeNanos = int64(d)
	}
	return s, nil
}

// settingsOut is a topic's settings in an answer (nil: none).
func settingsOut(s *sdk.TopicSettings) *settingsJSON {
	if s == nil || (s.RetentionBytes == 0 && s.RetentionAgeNanos == 0 && s.MaxMessageBytes == 0) {
		return nil
	}
	out := &settingsJSON{RetentionBytes: s.RetentionBytes, MaxMessageBytes: s.MaxMessageBytes}
	if s.RetentionAgeNanos > 0 {
		out.RetentionAge = time.Duration(s.RetentionAgeNanos).String()
	}
	return out
}

// forgetTopic drops topic's cached queue count after a change.
func (a *api) forgetTopic(topic string) {
	a.mu.Lock()
	delete(a.topics, topic)
	a.mu.Unlock()
}

// listGroups answers GET /v1/groups.
func (a *api) listGroups(w http.ResponseWriter, r *http.Request) {
	admin, err := a.groupAdmin()
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	resp, err := admin.ListGroups(ctx, &sdk.ListGroupsRequest{})
	if err != nil {
		fail(w, err)
		return
	}
	out := struct {
		Groups []groupSummaryOut `json:"groups"`
	}{Groups: []groupSummaryOut{}}
	for _, g := range resp.Groups {
		topics := g.Topics
		if topics == nil {
			topics = []string{}
		}
		out.Groups = append(out.Groups, groupSummaryOut{Name: g.Name, Members: g.Members, Topics: topics, Lag: g.Lag})
	}
	writeJSON(w, http.StatusOK, out)
}

// describeGroup answers GET /v1/groups/{group}.
func (a *api) describeGroup(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	if err := checkName("group", group); err != nil {
		fail(w, err)
		return
	}
	admin, err := a.groupAdmin()
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	d, err := admin.DescribeGroup(ctx, &sdk.DescribeGroupRequest{Group: group})
	if err != nil {
		fail(w, err)
		return
	}
	out := groupOut{Group: d.Group, Members: []groupMemberOut{}, Queues: []groupQueueOut{}, Internal: internalsOut(d.Internal)}
	for _, m := range d.Members {
		mo := groupMemberOut{ID: m.Id, Topics: m.Topics, Queues: []queueRefOut{}, LastHeartbeatUnixNano: m.LastHeartbeatUnixNano, ExpiresUnixNano: m.ExpiresUnixNano}
		if mo.Topics == nil {
			mo.Topics = []string{}
		}
		for _, q := range m.Queues {
			mo.Queues = append(mo.Queues, queueRefOut{Topic: q.Topic, Queue: q.Queue})
		}
		out.Members = append(out.Members, mo)
	}
	for _, q := range d.Queues {
		out.Queues = append(out.Queues, groupQueueOut{Topic: q.Topic, Queue: q.Queue, Start: q.Start, End: q.End, Committed: q.Committed, Lag: q.Lag, Member: q.Member})
	}
	writeJSON(w, http.StatusOK, out)
}

func internalsOut(in []*ferryv1.InternalTopicSize) []internalOut {
	out := make([]internalOut, 0, len(in))
	for _, t := range in {
		out = append(out, internalOut{Topic: t.Topic, Messages: t.Messages})
	}
	return out
}

// resetOffsets answers POST /v1/groups/{group}/reset.
func (a *api) resetOffsets(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	if err := checkName("group", group); err != nil {
		fail(w, err)
		return
	}
	var in resetIn
	const shape = `a reset {"topic","to":"earliest"|"latest"|"offset"|"time","offset","time","queues","force","dry_run"}`
	if err := a.decodeBody(w, r, &in, shape); err != nil {
		fail(w, err)
		return
	}
	if err := checkName("topic", in.Topic); err != nil {
		fail(w, err)
		return
	}
	req := &sdk.ResetOffsetsRequest{Group: group, Topic: in.Topic, Queues: in.Queues, Force: in.Force, DryRun: in.DryRun}
	switch in.To {
	case "earliest":
		req.To = ferryv1.ResetTo_RESET_TO_EARLIEST
	case "latest":
		req.To = ferryv1.ResetTo_RESET_TO_LATEST
	case "offset":
		if in.Offset == nil {
			fail(w, badRequest(`"to":"offset" needs "offset"`))
			return
		}
		req.To, req.Offset = ferryv1.ResetTo_RESET_TO_OFFSET, *in.Offset
	case "time":
		ts, err := time.Parse(time.RFC3339Nano, in.Time)
		if err != nil {
			fail(w, badRequest(`"time" %q: want RFC 3339, like 2026-12-06T21:00:00Z`, in.Time))
			return
		}
		req.To, req.TimestampUnixNano = ferryv1.ResetTo_RESET_TO_TIME, ts.UnixNano()
	default:
		fail(w, badRequest(`"to" is %q: want "earliest", "latest", "offset" or "time"`, in.To))
		return
	}
	if in.Offset != nil && in.To != "offset" {
		fail(w, badRequest(`"offset" goes with "to":"offset"`))
		return
	}
	admin, err := a.groupAdmin()
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	resp, err := admin.ResetOffsets(ctx, req)
	if err != nil {
		fail(w, err)
		return
	}
	out := struct {
		Group  string          `json:"group"`
		DryRun bool            `json:"dry_run"`
		Queues []resetQueueOut `json:"queues"`
	}{Group: group, DryRun: in.DryRun, Queues: []resetQueueOut{}}
	for _, q := range resp.Queues {
		out.Queues = append(out.Queues, resetQueueOut{Topic: q.Topic, Queue: q.Queue, Previous: q.Previous, Committed: q.Committed})
	}
	writeJSON(w, http.StatusOK, out)
}

// deleteGroup answers DELETE /v1/groups/{group}[?force=true].
func (a *api) deleteGroup(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	if err := checkName("group", group); err != nil {
		fail(w, err)
		return
	}
	force, err := boolParam(r, "force")
	if err != nil {
		fail(w, err)
		return
	}
	admin, err := a.groupAdmin()
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	resp, err := admin.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: group, Force: force})
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Group    string        `json:"group"`
		Deleted  bool          `json:"deleted"`
		Internal []internalOut `json:"internal_topics"`
	}{group, true, internalsOut(resp.Internal)})
}
