package coordinator

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

var screenshot = flag.String("screenshot", "", "also write a screenshot of the live page to this PNG (make screenshot: docs/cluster-live.png)")

// chromium finds a Chromium or Chrome binary. Without one the browser test
// fails under CI (CRDGO_CI=1, set by .ci/run) and skips, saying why, elsewhere.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const why = "no chromium on PATH (Debian: apt-get install chromium; make deps installs it)"
	if os.Getenv("CRDGO_CI") == "1" {
		t.Fatal(why + ": CI must run the browser test")
	}
	t.Skip(why)
	return ""
}

// feed plays n nodes over the real NATS API: they join, heartbeat, report
// every step with plausible losses and times, and publish a sample grid now
// and then, until stopped.
type feed struct {
	stop chan struct{}
	wg   sync.WaitGroup
	errs chan error
}

func startFeed(t *testing.T, tc *testCluster, n int, period time.Duration) *feed {
	f := &feed{stop: make(chan struct{}), errs: make(chan error, n+1)}
	var clients []*Client
	for i := range n {
		c := tc.client(fmt.Sprintf("node-%d", i), func(cfg *ClientConfig) { cfg.Host = fmt.Sprintf("10.0.0.%d:7100", 11+i) })
		if _, err := c.Join(ctx(t)); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	wctx, cancel := context.WithCancel(context.Background())
	// The newest assignment any node received: its generation and start step.
	var mu sync.Mutex
	var cur Assignment
	for _, c := range clients {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			err := c.Watch(wctx, func(u Update) {
				mu.Lock()
				defer mu.Unlock()
				if a := u.Assignment; a != nil && a.Gen > cur.Gen {
					cur = *a
				}
			})
			if err != nil && wctx.Err() == nil {
				f.errs <- fmt.Errorf("%s: watch: %w", c.cfg.Node, err)
			}
		}()
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer cancel()
		rng := rand.New(rand.NewPCG(15, 0))
		tick := time.NewTicker(period)
		defer tick.Stop()
		var gen, step uint64
		for {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			mu.Lock()
			a := cur
			mu.Unlock()
			if a.World != n {
				continue // until all n are in one generation
			}
			if a.Gen != gen {
				gen, step = a.Gen, a.Start
			}
			x := float64(step)
			for i, c := range clients {
				share := 1 / float64(n)
				r := Report{Gen: gen, Step: step,
					Losses: map[string]float64{
						"G_teacher": share * (0.9*math.Exp(-x/40) + 0.25 + 0.03*rng.NormFloat64()),
						"D":         share * (0.5 + 0.1*math.Sin(x/9) + 0.02*rng.NormFloat64()),
						"G_student": share * (1.6*math.Exp(-x/55) + 0.35 + 0.04*rng.NormFloat64()),
					},
					StepTime: 0.038 + 0.004*float64(i) + 0.003*rng.Float64(), AllreduceTime: 0.004 + 0.002*rng.Float64(),
				}
				if step%5 == 0 {
					r.Checksum = fmt.Sprintf("%016x", step*0x9e3779b97f4a7c15)
				}
				rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := c.Report(rctx, r)
				rcancel()
				if err != nil {
					f.errs <- fmt.Errorf("%s: report gen %d step %d: %w", c.cfg.Node, gen, step, err)
					return
				}
			}
			if step%50 == 0 {
				mf := Manifest{Step: step, Recipe: tc.spec.Recipe, Version: tc.spec.Version}
				for j, name := range []string{"teacher_G", "teacher_D", "student_G", "state"} {
					mf.Files = append(mf.Files, ManifestFile{Name: name + ".safetensors", Size: int64(400_000 * (j + 1)), SHA256: fmt.Sprintf("%064x", step*uint64(j+1))})
				}
				cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := clients[0].CommitCheckpoint(cctx, gen, mf)
				ccancel()
				if err != nil {
					f.errs <- fmt.Errorf("checkpoint of step %d: %w", step, err)
					return
				}
			}
			if step%10 == 1 {
				if err := clients[0].PublishSample(step, sampleGrid(step)); err != nil {
					f.errs <- err
					return
				}
			}
			step++
		}
	}()
	t.Cleanup(func() { f.close(t) })
	return f
}

func (f *feed) close(t *testing.T) {
	select {
	case <-f.stop:
		return
	default:
	}
	close(f.stop)
	f.wg.Wait()
	close(f.errs)
	for err := range f.errs {
		t.Error(err)
	}
}

// sampleGrid draws a stand-in for the trainer's grid (input | teacher |
// student | target, three rows of 64²): edge maps of shapes and their filled
// renderings, the student's a little off. The node round publishes real ones.
func sampleGrid(step uint64) []byte {
	const s = 64
	img := image.NewRGBA(image.Rect(0, 0, 4*s, 3*s))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	fills := []color.RGBA{{200, 60, 50, 255}, {60, 120, 200, 255}, {70, 170, 90, 255}}
	for row := range 3 {
		cx, cy, r := 30+row*2, 32, 17+row*4
		for col := range 4 {
			for y := range s {
				for x := range s {
					dx, dy := float64(x-cx), float64(y-cy)
					var in, edge bool
					if row == 1 { // a square
						ax, ay := math.Abs(dx), math.Abs(dy)
						in, edge = ax < float64(r) && ay < float64(r), math.Abs(math.Max(ax, ay)-float64(r)) < 1.2
					} else {
						d := math.Hypot(dx, dy)
						in, edge = d < float64(r), math.Abs(d-float64(r)) < 1.2
					}
					c := color.RGBA{255, 255, 255, 255}
					switch {
					case col == 0 && edge:
						c = color.RGBA{30, 30, 30, 255}
					case col > 0 && in:
						f := fills[row]
						shade := 0.75 + 0.25*(-dx-dy)/float64(2*r)
						if col == 2 { // the student, not quite there yet
							shade *= 0.9 + 0.1*math.Min(1, float64(step)/200)
						}
						c = color.RGBA{clamp(float64(f.R) * shade), clamp(float64(f.G) * shade), clamp(float64(f.B) * shade), 255}
					}
					img.SetRGBA(col*s+x, row*s+y, c)
				}
			}
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}

func clamp(v float64) uint8 { return uint8(math.Max(0, math.Min(255, v))) }

// TestLivePageInBrowser loads the live page of a follower in headless
// Chromium while three nodes report over the real NATS API: the page must
// load without console errors, show the three members and a leader, and its
// step counter must advance.
func TestLivePageInBrowser(t *testing.T) {
	exe := chromium(t)
	tc := startCluster(t, 3, func(c *Config) { c.Spec.MinNodes = 3; c.Spec.MaxSteps = 0 })
	fd := startFeed(t, tc, 3, 40*time.Millisecond)
	var page *Server
	for _, s := range tc.servers {
		if !s.isLeader() {
			page = s
		}
	}
	url := "http://" + page.HTTPAddr() + "/"

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.WindowSize(1280, 1180))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	var mu sync.Mutex
	var problems []string
	console := chromedp.Console(bctx) // starts the browser; subscribes before the page loads
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()
	defer func() { bcancel(); <-consoleDone }()

	run := func(what string, timeout time.Duration, a chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, timeout)
		defer cancel()
		if _, err := chromedp.Run(c, a); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		v, err := chromedp.Run(c, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	started := time.Now()
	run("load "+url, 30*time.Second, chromedp.Navigate(url))
	poll := func(what, expr string) {
		t.Helper()
		c, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		if _, err := chromedp.Run(c, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("page: no %s: %v\nconsole: %q\npage text: %s", what, err, problems, eval(`document.body.innerText`))
		}
	}
	poll("3 members", `document.querySelectorAll("#members tbody tr.active").length === 3`)
	poll("a committed checkpoint", `document.getElementById("checkpoints").textContent.includes("step 50:")`)
	poll("a leader", `document.getElementById("leader").textContent.startsWith("c")`)
	first, _ := strconv.Atoi(eval(`document.getElementById("step").textContent`))
	poll("step advance", fmt.Sprintf(`Number(document.getElementById("step").textContent) > %d`, first+2))
	last, _ := strconv.Atoi(eval(`document.getElementById("step").textContent`))
	t.Logf("page at %s: 3 members, step %d → %d, %v after load began", url, first, last, time.Since(started).Round(time.Millisecond))
	if members := eval(`[...document.querySelectorAll("#members tbody tr")].map(r => r.dataset.node).join(",")`); members != "node-0,node-1,node-2" {
		t.Errorf("members on the page: %q; want node-0,node-1,node-2", members)
	}

	if *screenshot != "" {
		poll("60 committed steps", `Number(document.getElementById("step").textContent) >= 60`)
		poll("the sample grid", `document.getElementById("sample").complete && document.getElementById("sample").naturalWidth > 0`)
		c, cancel := context.WithTimeout(bctx, 30*time.Second)
		defer cancel()
		shot, err := chromedp.Run(c, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(*screenshot, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", *screenshot, len(shot))
	}
	fd.close(t)
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser console: %s", p)
	}
}
