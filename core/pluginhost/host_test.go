package pluginhost

import "testing"

func TestQuietSysmon(t *testing.T) {
	for _, c := range []struct {
		in, want string
		set      bool
	}{
		{"", "schedtrace=2147483647", true},
		{"gctrace=1", "gctrace=1,schedtrace=2147483647", true},
		{"schedtrace=0", "", false},
		{"gctrace=1, schedtrace=1000", "", false},
	} {
		got, set := quietSysmon(c.in)
		if got != c.want || set != c.set {
			t.Errorf("quietSysmon(%q) = %q, %v; want %q, %v", c.in, got, set, c.want, c.set)
		}
	}
}
