// Command genutf8 writes core/sdk/utf8_gen.go (see package genutf8):
//
//	go generate ./core/sdk
package main

import (
	"fmt"
	"os"

	"github.com/ferrymq/ferry/core/sdk/internal/genutf8"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: genutf8 OUTPUT.go")
		os.Exit(2)
	}
	src, err := genutf8.Generate()
	if err == nil {
		err = os.WriteFile(os.Args[1], src, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "genutf8:", err)
		os.Exit(1)
	}
}
