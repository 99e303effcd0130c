package admin

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrymq/ferry/core/sdk"
)

// TestGroupLabelsBounded: clients name groups freely, and each distinct
// group was a series of its own (4,000 groups: /metrics from 12 KB to
// 778 KB). Past MaxGroupLabels the counts go to "other" and gauges are not
// exported; the pipeline's groups, admitted first, keep their own.
func TestGroupLabelsBounded(t *testing.T) {
	m := NewMetrics(nil)
	m.AdmitGroups("flow")
	for i := range 4000 {
		g := fmt.Sprintf("g%d", i)
		m.Consumed("orders", g, 1)
		m.Retried(g, 1)
		m.SetConsumerLag("orders", g, 5)
		m.SetDLQDepth(g, 1)
		m.OffsetReplicationFailed(g)
		m.Appended(sdk.RetryTopic(g), 1)
		m.Appended(sdk.DLQTopic(g), 1)
	}
	m.Consumed("orders", "flow", 7)
	for _, c := range []struct {
		name string
		max  int
	}{
		{MetricConsumeMessages, MaxGroupLabels + 1},
		{MetricRetries, MaxGroupLabels + 1},
		{MetricOffsetReplicationFailures, MaxGroupLabels + 1},
		{MetricConsumerLag, MaxGroupLabels},
		{MetricDLQDepth, MaxGroupLabels},
		{MetricAppendMessages, 2*MaxGroupLabels + 1},
	} {
		if n := testutil.CollectAndCount(m.Registry(), c.name); n > c.max || n < c.max-2 {
			t.Errorf("%s has %d series, want at most %d", c.name, n, c.max)
		}
	}
	if got := testutil.ToFloat64(m.consumed.WithLabelValues("orders", "flow")); got != 7 {
		t.Errorf("the admitted group's count is %g, want 7", got)
	}
	// Every count past the bound is in "other": none is lost.
	own := MaxGroupLabels - 1 // "flow" took one
	if got := testutil.ToFloat64(m.consumed.WithLabelValues("orders", OtherLabel)); got != float64(4000-own) {
		t.Errorf("other: %g, want %d", got, 4000-own)
	}
	if got := testutil.ToFloat64(m.appended.WithLabelValues(OtherLabel)); got != float64(2*(4000-own)) {
		t.Errorf("appended to other: %g, want %d", got, 2*(4000-own))
	}
	if got := testutil.ToFloat64(m.appended.WithLabelValues(sdk.RetryTopic("g0"))); got != 1 {
		t.Errorf("an admitted group's retry topic: %g, want 1", got)
	}
}
