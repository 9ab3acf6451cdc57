//go:build race

package tensortest

const raceEnabled = true
