package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// lineReader reads the lines of `ferry produce`'s input, each up to limit
// bytes. A longer line is not an end of the input (as bufio.Scanner makes it:
// "token too long", and the rest of the file unsent): it is read past and
// reported with its number, and the lines after it are read as usual.
type lineReader struct {
	r     *bufio.Reader
	limit int
	n     int // number of the last line read, from 1
}

func newLineReader(r io.Reader, limit int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), limit: limit}
}

// errLineTooLong is a line over the limit; next returns it wrapped with the
// line's number and size.
var errLineTooLong = errors.New("line too long")

// next returns the next line without its "\n" (or "\r\n"); io.EOF after the
// last one. A line over the limit returns an error wrapping errLineTooLong
// and naming the line and the limit; the caller may go on reading.
func (l *lineReader) next() ([]byte, error) {
	var line []byte
	size, over := 0, false
	for {
		frag, err := l.r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
			return nil, err
		}
		size += len(frag)
		if !over {
			line = append(line, frag...)
			if len(line) > l.limit+2 { // +2: a "\r\n" is no part of the line
				over, line = true, nil
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && size == 0 {
			return nil, io.EOF
		}
		l.n++
		line = bytes.TrimSuffix(line, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if over || len(line) > l.limit {
			return nil, fmt.Errorf("%w: line %d has more than %d bytes, the message size limit (max_message_bytes): not sent", errLineTooLong, l.n, l.limit)
		}
		return line, nil
	}
}
