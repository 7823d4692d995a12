// Package gotgt pins the gotgt release that the comparison harnesses run as
// a reference peer. The module has no code of its own: go.mod declares the
// stock gotgt daemon as a tool, and the harness builds it unmodified with
//
//	CGO_ENABLED=0 go build -o <dir>/gotgt github.com/gostor/gotgt
//
// run from this directory. Nothing of gotgt is copied into the repository,
// and the root module never imports it. See README.md.
package gotgt
