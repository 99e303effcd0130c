package raft_test

import (
	"os"
	"testing"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// TestMain removes the ferry binaries ferrytest.Binary built for these tests.
func TestMain(m *testing.M) { os.Exit(ferrytest.Main(m)) }
