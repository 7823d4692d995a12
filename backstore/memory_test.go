package backstore_test

import (
	"errors"
	"testing"

	"github.com/iscsi-target/iscsi-target/backstore"
	"github.com/iscsi-target/iscsi-target/backstore/backstoretest"
)

func TestMemoryConformance(t *testing.T) {
	backstoretest.Run(t, func(t *testing.T, size int64) backstore.Device {
		return backstore.NewMemory(size)
	})
}

func TestMemoryReadOnly(t *testing.T) {
	m := backstore.NewMemory(8192)
	m.SetReadOnly(true)
	ctx := t.Context()
	buf := make([]byte, 512)
	for name, err := range map[string]error{
		"WriteAt":     m.WriteAt(ctx, buf, 0, 0),
		"Unmap":       m.Unmap(ctx, 0, 512),
		"WriteZeroes": m.WriteZeroes(ctx, 0, 512),
	} {
		if !errors.Is(err, backstore.ErrReadOnly) {
			t.Errorf("%s on a read-only Memory = %v, want ErrReadOnly", name, err)
		}
	}
	if err := m.ReadAt(ctx, buf, 0); err != nil {
		t.Errorf("ReadAt on a read-only Memory: %v", err)
	}
}
