package report

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Percentiles are the latency percentiles charted.
var Percentiles = []int{50, 75, 90, 99}

// LatencyChart writes a PNG bar chart of the median latency percentiles
// of every series with conns connections to file.
func LatencyChart(file string, d *Data, conns int) error {
	var series []Series
	for _, s := range d.HTTP {
		if s.Conns == conns {
			series = append(series, s)
		}
	}
	if len(series) == 0 {
		return fmt.Errorf("no series with %d connections", conns)
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("wrk latency percentiles, %d connection(s), medians of %d runs", conns, d.Runs)
	p.Y.Label.Text = "latency (µs)"
	w := vg.Points(float64(60) / float64(len(Percentiles)))
	shades := []color.Color{
		color.RGBA{0x9e, 0xca, 0xe1, 0xff}, color.RGBA{0x42, 0x92, 0xc6, 0xff},
		color.RGBA{0x21, 0x71, 0xb5, 0xff}, color.RGBA{0x08, 0x30, 0x6b, 0xff},
	}
	var names []string
	for _, s := range series {
		names = append(names, s.Target)
	}
	for i, pc := range Percentiles {
		vals := make(plotter.Values, len(series))
		for j, s := range series {
			v := s.P(pc)
			if !finite(v) {
				v = 0
			}
			vals[j] = v
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		bars.LineStyle.Width = 0
		bars.Color = shades[i%len(shades)]
		bars.Offset = vg.Length(float64(i)-float64(len(Percentiles)-1)/2) * w
		p.Add(bars)
		p.Legend.Add(fmt.Sprintf("p%d", pc), bars)
	}
	p.Legend.Top = true
	p.NominalX(names...)
	p.X.Min, p.X.Max = -0.7, float64(len(series)-1)+0.7
	return p.Save(vg.Length(9)*vg.Inch, 4.5*vg.Inch, file)
}
