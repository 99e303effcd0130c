package verify

import (
	"os"
	"testing"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

func TestMain(m *testing.M) { os.Exit(ferrytest.Main(m)) }
