package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	hraft "github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// boltStore is raft's StableStore (its term and vote) over one bbolt file.
// Every write is one transaction, fsynced before it returns. It was raft's
// LogStore too before the segment log (seglog.go): migrateBoltLogs moves a
// log it holds into the segment log.
type boltStore struct {
	db *bolt.DB
}

var (
	bucketLogs   = []byte("logs")
	bucketStable = []byte("stable")
	// errKeyNotFound is what hashicorp/raft expects from a StableStore for
	// a key never set (it compares the message).
	errKeyNotFound = errors.New("not found")
)

var (
	_ hraft.LogStore    = (*boltStore)(nil)
	_ hraft.StableStore = (*boltStore)(nil)
)

func openBoltStore(path string) (*boltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketLogs); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketStable)
		return err
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &boltStore{db: db}, nil
}

func (s *boltStore) Close() error { return s.db.Close() }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func (s *boltStore) FirstIndex() (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().First(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

func (s *boltStore) LastIndex() (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().Last(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

func (s *boltStore) GetLog(index uint64, log *hraft.Log) error {
	return s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLogs).Get(u64(index))
		if v == nil {
			return hraft.ErrLogNotFound
		}
		return decodeLog(v, log)
	})
}

func (s *boltStore) StoreLog(log *hraft.Log) error { return s.StoreLogs([]*hraft.Log{log}) }

func (s *boltStore) StoreLogs(logs []*hraft.Log) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		for _, l := range logs {
			if err := b.Put(u64(l.Index), encodeLog(l)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) DeleteRange(min, max uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLogs).Cursor()
		for k, _ := c.Seek(u64(min)); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) Set(key, val []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketStable).Put(key, val) })
}

func (s *boltStore) Get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketStable).Get(key)
		if v == nil {
			return errKeyNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

func (s *boltStore) SetUint64(key []byte, val uint64) error { return s.Set(key, u64(val)) }

func (s *boltStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("stable key %q: %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// encodeLog: index, term, appended-at (8 bytes each), type (1), then data
// and extensions, each with a 4-byte length.
func encodeLog(l *hraft.Log) []byte {
	return appendLog(make([]byte, 0, 33+len(l.Data)+len(l.Extensions)), l)
}

func decodeLog(b []byte, l *hraft.Log) error {
	if len(b) < 33 {
		return fmt.Errorf("raft log entry of %d bytes: too short", len(b))
	}
	l.Index = binary.BigEndian.Uint64(b)
	l.Term = binary.BigEndian.Uint64(b[8:])
	l.AppendedAt = time.Unix(0, int64(binary.BigEndian.Uint64(b[16:])))
	l.Type = hraft.LogType(b[24])
	n := int(binary.BigEndian.Uint32(b[25:]))
	rest := b[29:]
	if len(rest) < n+4 {
		return errors.New("raft log entry: data truncated")
	}
	l.Data = append([]byte(nil), rest[:n]...)
	rest = rest[n:]
	m := int(binary.BigEndian.Uint32(rest))
	rest = rest[4:]
	if len(rest) < m {
		return errors.New("raft log entry: extensions truncated")
	}
	l.Extensions = nil
	if m > 0 {
		l.Extensions = append([]byte(nil), rest[:m]...)
	}
	return nil
}

// migrateBoltLogs moves the entries of the bbolt log (a node that ran a
// version before the segment log) into a segment log at dir, once: they
// are written to a new directory, made durable and renamed to dir, then
// deleted from bbolt. A crash before the rename leaves the bbolt log as it
// was (the next start migrates again); after it, the next start only
// deletes them from bbolt.
func migrateBoltLogs(b *boltStore, dir string) error {
	last, err := b.LastIndex()
	if err != nil || last == 0 {
		return err
	}
	if _, err := os.Stat(dir); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		tmp := dir + ".migrating"
		if err := os.RemoveAll(tmp); err != nil {
			return err
		}
		l, err := openSegLog(tmp)
		if err != nil {
			return err
		}
		var batch []*hraft.Log
		flush := func() error {
			err := l.StoreLogs(batch)
			batch = batch[:0]
			return err
		}
		err = b.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketLogs).ForEach(func(_, v []byte) error {
				lg := new(hraft.Log)
				if err := decodeLog(v, lg); err != nil {
					return err
				}
				if n := len(batch); n > 0 && (batch[n-1].Index+1 != lg.Index || n == 1024) {
					if err := flush(); err != nil {
						return err
					}
				}
				batch = append(batch, lg)
				return nil
			})
		})
		if err == nil && len(batch) > 0 {
			err = flush()
		}
		if cerr := l.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, dir)
		}
		if err == nil {
			err = syncDir(filepath.Dir(dir))
		}
		if err != nil {
			return fmt.Errorf("moving the raft log out of bbolt: %w", err)
		}
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketLogs); err != nil {
			return err
		}
		_, err := tx.CreateBucket(bucketLogs)
		return err
	})
}
