package verify

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WriteTable prints the report's summary.
func (rep *Report) WriteTable(w io.Writer) error {
	r := rep.Result
	flush := rep.Flush
	if flush == "" {
		flush = "(store default)"
	}
	pace := ""
	if rep.Rate > 0 {
		pace = fmt.Sprintf(" at %g msgs/s each", rep.Rate)
	}
	keys := ""
	if rep.Keys > 1 {
		keys = fmt.Sprintf(" of %d keys each", rep.Keys)
	}
	fmt.Fprintf(w, "ferry verify %s: storage %s, flush %s; topic %s; %d %s producer(s)%s%s, %d-byte messages, %s\n",
		rep.Pipeline, rep.Storage, flush, rep.Topic, rep.Producers, rep.Mode, keys, pace, rep.Size, rep.Duration)
	if rep.Replication != "" {
		fmt.Fprintf(w, "cluster: %s replication, nodes %s\n", rep.Replication, strings.Join(rep.Nodes, ", "))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAULT\tINJECTED\tHEALED\tRECOVERY")
	for _, f := range rep.Faults {
		rec := (f.Healed - f.Injected).Round(time.Millisecond).String()
		if f.Node != "" {
			rec += " (node " + f.Node + ")"
		}
		if f.Failover {
			rec += " failover: " + f.Detail
		}
		if f.Error != "" {
			rec = "error: " + f.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Fault, f.Injected.Round(time.Millisecond), f.Healed.Round(time.Millisecond), rec)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	row := func(name string, v int, note string) { fmt.Fprintf(tw, "%s\t%d\t %s\n", name, v, note) }
	row("sent", r.Sent, "")
	row("acked OK", r.Acked, fmt.Sprintf("latency p50 %s, p99 %s, max %s", rep.LatencyP50.Round(time.Microsecond), rep.LatencyP99.Round(time.Microsecond), rep.LatencyMax.Round(time.Millisecond)))
	row("acked weaker than OK", r.Weak, fmt.Sprintf("%d of them stored", r.WeakStored))
	row("outcome unknown", r.Unknown, fmt.Sprintf("%d of them stored", r.UnknownStored))
	row("refused", r.Refused, fmt.Sprintf("%d of them stored (must be 0)", r.RefusedStored))
	if r.Oneway > 0 {
		row("oneway (no answer)", r.Oneway, fmt.Sprintf("%d of them stored; oneway promises nothing", r.OnewayStored))
	}
	row("stored", r.Stored, "")
	lostNote := "acked OK, not stored"
	if rep.LostAtPowerLoss > 0 {
		lostNote += fmt.Sprintf("; %d lost at power loss, acked at most %s before it (flush async permits %s + %s)",
			rep.LostAtPowerLoss, rep.LossWindow.Round(time.Millisecond), rep.FlushInterval, PowerLossSlack)
	}
	if rep.LostAtFailover > 0 {
		lostNote += fmt.Sprintf("; %d lost at the master's death, acked up to %s before it (the lag async replication permits)",
			rep.LostAtFailover, rep.FailoverLag.Round(time.Millisecond))
	}
	row("lost", r.Lost, lostNote)
	row("duplicated", r.Duplicated, "extra copies stored")
	row("unexpected", r.Unexpected, "stored, never sent")
	row("out of order", r.OutOfOrder, "per key")
	row("wrong offset", r.WrongOffset, "stored elsewhere than acked")
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, g := range rep.Groups {
		// A group's duplicates are redeliveries: at least once permits
		// them, so they are counted and never fail the run.
		fmt.Fprintf(w, "group %s (%s, %d consumer restart(s)): delivered %d, redelivered %d (duplicates: at least once permits them, not a failure), missing %d, delivered but not stored %d\n",
			g.Group, g.Delivery, g.Restarts, g.Delivered, g.Redelivered, g.Missing, g.NotStored)
	}
	for _, ns := range rep.NodeStores {
		switch {
		case ns.Role == "leader":
			fmt.Fprintf(w, "node %s (leader): the table above\n", ns.Node)
		case ns.Result == nil:
			fmt.Fprintf(w, "node %s (%s): not read back: %s\n", ns.Node, ns.Role, ns.Error)
		default:
			nr := ns.Result
			behind := ""
			if ns.Behind {
				behind = ", behind the leader"
			}
			fmt.Fprintf(w, "node %s (%s%s): stored %d, lost %d (%d the leader holds, %d of them permitted), duplicated %d, unexpected %d, out of order %d, wrong offset %d\n",
				ns.Node, ns.Role, behind, nr.Stored, nr.Lost, ns.MissingHeld, ns.PermittedLoss, nr.Duplicated, nr.Unexpected, nr.OutOfOrder, nr.WrongOffset)
		}
	}
	for kind, ex := range r.Examples {
		fmt.Fprintf(w, "  %s, e.g.: %v\n", kind, ex)
	}
	fmt.Fprintf(w, "verdict: %s\n", rep.Verdict)
	for _, why := range rep.Reasons {
		fmt.Fprintf(w, "  - %s\n", why)
	}
	return nil
}

// WriteFiles writes results.json and latency.png into the report's dir.
func (rep *Report) WriteFiles() error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(rep.Dir, "results.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	return rep.WritePicture(filepath.Join(rep.Dir, "latency.png"))
}

// WritePicture draws the run as a PNG: on top, the latency of every send
// over time (acknowledged ones in blue, unknown outcomes in red), below it
// the messages acknowledged per second, with each fault's window shaded in
// both.
func (rep *Report) WritePicture(path string) error {
	lat := plot.New()
	name := filepath.Base(rep.Pipeline)
	if len(rep.Pipelines) > 1 {
		var names []string
		for _, p := range rep.Pipelines {
			names = append(names, filepath.Base(p))
		}
		name = fmt.Sprintf("%s (%s)", strings.Join(names, " "), rep.Replication)
	}
	lat.Title.Text = fmt.Sprintf("ferry verify %s: %s", name, rep.Verdict)
	lat.X.Label.Text = "seconds since the start"
	lat.Y.Label.Text = "send latency (ms)"
	lat.Y.Scale = plot.LogScale{}
	lat.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	var ok, bad plotter.XYs
	maxMS := 1.0
	for _, s := range rep.Sends {
		pt := plotter.XY{X: s.Start.Seconds(), Y: max(float64(s.Latency)/1e6, 0.01)}
		maxMS = max(maxMS, pt.Y)
		if s.Outcome == OutcomeOK.String() {
			ok = append(ok, pt)
		} else {
			bad = append(bad, pt)
		}
	}
	thr := plot.New()
	thr.X.Label.Text = "seconds since the start"
	thr.Y.Label.Text = fmt.Sprintf("acked per second (per %s)", rep.RateBucket)
	var per plotter.XYs
	maxPer := 1.0
	for i, v := range rep.AckRate {
		per = append(per, plotter.XY{X: (float64(i) + 0.5) * rep.RateBucket.Seconds(), Y: v})
		maxPer = max(maxPer, v)
	}
	shade := color.NRGBA{R: 255, G: 150, B: 40, A: 70}
	for i, f := range rep.Faults {
		x0, x1 := f.Injected.Seconds(), max(f.Healed.Seconds(), f.Injected.Seconds()+0.05)
		for _, pl := range []struct {
			p      *plot.Plot
			lo, hi float64
		}{{lat, 0.01, maxMS * 2}, {thr, 0, maxPer * 1.1}} {
			poly, err := plotter.NewPolygon(plotter.XYs{{X: x0, Y: pl.lo}, {X: x1, Y: pl.lo}, {X: x1, Y: pl.hi}, {X: x0, Y: pl.hi}})
			if err != nil {
				return err
			}
			poly.Color, poly.LineStyle.Width, poly.LineStyle.Color = shade, 0, color.Transparent
			pl.p.Add(poly)
			if i == 0 && pl.p == lat {
				lat.Legend.Add("fault to healed", poly)
			}
		}
	}
	for _, pts := range []struct {
		xys    plotter.XYs
		name   string
		radius vg.Length
		color  color.Color
		shape  draw.GlyphDrawer
	}{
		{ok, "acked", vg.Points(0.8), color.RGBA{B: 200, A: 255}, draw.CircleGlyph{}},
		{bad, "not acked OK", vg.Points(2), color.RGBA{R: 220, A: 255}, draw.CrossGlyph{}},
	} {
		if len(pts.xys) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(pts.xys)
		if err != nil {
			return err
		}
		sc.GlyphStyle.Radius, sc.GlyphStyle.Color, sc.GlyphStyle.Shape = pts.radius, pts.color, pts.shape
		lat.Add(sc)
		lat.Legend.Add(pts.name, sc)
	}
	if len(per) > 0 {
		line, err := plotter.NewLine(per)
		if err != nil {
			return err
		}
		line.Color = color.RGBA{G: 120, B: 60, A: 255}
		thr.Add(line)
	}
	lat.Legend.Top = true
	xmax := rep.Duration.Seconds()
	for _, pl := range []*plot.Plot{lat, thr} {
		pl.X.Min, pl.X.Max = 0, xmax
		pl.Add(plotter.NewGrid())
	}
	lat.Y.Min, lat.Y.Max = 0.01, maxMS*2
	thr.Y.Min, thr.Y.Max = 0, maxPer*1.1

	img := vgimg.New(vg.Points(960), vg.Points(640))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(12), PadY: vg.Points(12)}
	canvases := plot.Align([][]*plot.Plot{{lat}, {thr}}, tiles, dc)
	lat.Draw(canvases[0][0])
	thr.Draw(canvases[1][0])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
