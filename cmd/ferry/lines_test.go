package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLineReader(t *testing.T) {
	const limit = 100 << 10 // over bufio's 64KiB buffer: lines span reads
	long := strings.Repeat("x", limit)
	input := "a\r\n\n" + long + "\n" + long + "y\n" + strings.Repeat("z", 300<<10) + "\r\nlast"
	lr := newLineReader(strings.NewReader(input), limit)
	var got []string
	for {
		b, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		switch {
		case errors.Is(err, errLineTooLong):
			got = append(got, err.Error())
		case err != nil:
			t.Fatal(err)
		default:
			got = append(got, fmt.Sprintf("%d bytes", len(b)))
		}
	}
	tooLong := func(n int) string {
		return fmt.Sprintf("line too long: line %d has more than %d bytes, the message size limit (max_message_bytes): not sent", n, limit)
	}
	want := []string{"1 bytes", "0 bytes", fmt.Sprintf("%d bytes", limit), tooLong(4), tooLong(5), "4 bytes"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("lines:\n%v\nwant\n%v", got, want)
	}
}

// TestProduceLongLines: `ferry produce --file` sends lines up to the message
// size limit (past bufio.Scanner's 64KiB); a longer line is a failed message
// naming its line number and the limit, and the lines after it are sent
// (the whole run stopped at it with "token too long" and "0 failed").
func TestProduceLongLines(t *testing.T) {
	addr := startBroker(t)
	file := filepath.Join(t.TempDir(), "lines.txt")
	content := "first\n" + strings.Repeat("m", 100<<10) + "\n" + strings.Repeat("L", 4<<20+1) + "\nlast\n"
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := produce(t, "", "--broker", addr, "--topic", "t", "--file", file)
	if code != 1 {
		t.Errorf("exit %d, want 1 (a line failed)", code)
	}
	if !strings.Contains(stderr, "line 3 has more than 4194304 bytes, the message size limit") {
		t.Errorf("stderr does not name line 3 and the limit:\n%s", stderr)
	}
	if !strings.Contains(stdout, "3 OK, 0 with a weaker status, 1 failed") {
		t.Errorf("summary:\n%s\nwant 3 OK and 1 failed", stdout)
	}
}
