//go:build tools

// Package tools records the command scripts/testbin.sh builds. It is never compiled.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
