package sdk

import (
	"errors"
	"strings"
	"testing"
)

func TestListenerLife(t *testing.T) {
	l := NewListener("test transport")
	if _, err := l.Take(func() {}); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("Take before Bind: %v", err)
	}
	if err := l.Bind("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	addr := l.Addr()
	if err := l.Bind("127.0.0.1:0"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("second Bind: %v", err)
	}
	busy := NewListener("other transport")
	if err := busy.Bind(addr); err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "config key listen") {
		t.Fatalf("binding a busy address: %v", err)
	}
	lis, err := l.Take(func() {})
	if err != nil || lis.Addr().String() != addr {
		t.Fatalf("Take: %v %v", lis, err)
	}
	if _, err := l.Take(func() {}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Take while serving: %v", err)
	}
	lis.Close()
	l.Done()
	// A second Serve binds the same address again.
	lis, err = l.Take(func() {})
	if err != nil || lis.Addr().String() != addr {
		t.Fatalf("Take again: %v %v", lis, err)
	}
	lis.Close()
	l.Done()
	// Close stops a running Serve.
	stopped := false
	lis, err = l.Take(func() { stopped = true })
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if err := l.Close(); err != nil || !stopped {
		t.Fatalf("Close: %v, stopped %v", err, stopped)
	}
	if _, err := l.Take(func() {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Take after Close: %v", err)
	}
}
