//go:build tools

// Package tools records the command scripts/testbin.sh builds. It is never compiled.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
