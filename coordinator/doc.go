// Package coordinator is the control plane of a data-parallel job: a raft
// group (3 or 5 replicas, hashicorp/raft) that admits worker nodes, opens
// generations (a ring order and a batch split), commits steps and checkpoint
// manifests, compares parameter checksums, and serves it all over NATS and
// HTTP. It knows nothing of models or training: nodes bring those.
//
// The layers, from the inside out:
//
//   - fsm.go: apply(State, Command) (State, []Effect), a pure function with no
//     clock, network, disk or goroutine. Time arrives as a command
//     (HeartbeatTimeout); what must happen outside comes back as effects.
//     testdata/*.txt are transcripts of it (go test -run TestTranscripts
//     -update rewrites them; review the diff).
//   - messages.go: Message, the one versioned JSON envelope of requests, raft
//     entries and events, and Decode, which bounds, validates and is fuzzed.
//   - raft.go: Replica, hashicorp/raft around apply (TCP + boltdb, or in
//     memory), raft's logs through zap (hclog.go).
//   - server.go, http.go, metrics.go, web/: Server, what every replica runs:
//     the control subjects crdgo.<job>.ctl.* (writes forwarded to the leader),
//     node liveness on the leader, events to nodes, /healthz, /status,
//     /metrics and the live page.
//   - client.go: Client, the node's side: Join, Watch, Report,
//     CommitCheckpoint, Leave, Status, PublishSample.
//
// A node's life, as the node package drives it:
//
//	c, _ := coordinator.NewClient(nc, cfg, log)
//	j, _ := c.Join(ctx)                  // refused with the spec field named, or admitted
//	go c.Watch(ctx, func(u coordinator.Update) {
//		if u.Assignment != nil { … }     // new generation: roll back to step Start-1, join its ring, train from Start
//	})
//	c.Report(ctx, coordinator.Report{Gen: g, Step: s, Losses: …, StepTime: …, AllreduceTime: …, Checksum: …})
//	c.CommitCheckpoint(ctx, g, manifest) // rank 0, after writing the files
//
// docs/cluster.md describes the processes, the protocol, security, the
// metrics and what an operator runs.
package coordinator
