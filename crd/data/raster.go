package data

import (
	"image"
	"math"
)

// A small anti-aliased rasteriser for the synthetic datasets: shapes are signed distance
// functions (negative inside, in pixels), painted with coverage clamp(½ − d, 0, 1), which
// is the area of a pixel a straight edge covers to first order.

type rgb [3]float64

func (c rgb) scale(k float64) rgb { return rgb{c[0] * k, c[1] * k, c[2] * k} }
func (c rgb) mul(k rgb) rgb       { return rgb{c[0] * k[0], c[1] * k[1], c[2] * k[2]} }
func (c rgb) add(d rgb) rgb       { return rgb{c[0] + d[0], c[1] + d[1], c[2] + d[2]} }
func lerp(a, b rgb, t float64) rgb {
	return rgb{a[0] + (b[0]-a[0])*t, a[1] + (b[1]-a[1])*t, a[2] + (b[2]-a[2])*t}
}

// canvas is an s×s RGB image of float64 values in [0, 255]; pixel (x, y) is sampled at
// its centre (x + ½, y + ½).
type canvas struct {
	s   int
	pix []rgb
}

func newCanvas(s int) *canvas { return &canvas{s: s, pix: make([]rgb, s*s)} }

// fill sets every pixel to col at its centre.
func (c *canvas) fill(col func(x, y float64) rgb) {
	for y := range c.s {
		for x := range c.s {
			c.pix[y*c.s+x] = col(float64(x)+0.5, float64(y)+0.5)
		}
	}
}

// paint blends col over the pixels inside sdf, with opacity alpha, visiting only the
// pixels of box (which must contain the shape plus a pixel of margin).
func (c *canvas) paint(box bbox, sdf func(x, y float64) float64, col func(x, y float64) rgb, alpha float64) {
	x0, y0, x1, y1 := box.clip(c.s)
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			px, py := float64(x)+0.5, float64(y)+0.5
			a := math.Min(math.Max(0.5-sdf(px, py), 0), 1) * alpha
			if a == 0 {
				continue
			}
			i := y*c.s + x
			c.pix[i] = lerp(c.pix[i], col(px, py), a)
		}
	}
}

// stroke draws the outline of sdf, width w pixels, in col.
func (c *canvas) stroke(box bbox, sdf func(x, y float64) float64, w float64, col rgb) {
	c.paint(box.grow(w), func(x, y float64) float64 { return math.Abs(sdf(x, y)) - w/2 }, func(x, y float64) rgb { return col }, 1)
}

// image rounds the canvas to 8-bit RGB.
func (c *canvas) image() *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, c.s, c.s))
	for i, p := range c.pix {
		for ch := range 3 {
			img.Pix[4*i+ch] = uint8(math.Round(math.Min(math.Max(p[ch], 0), 255)))
		}
		img.Pix[4*i+3] = 255
	}
	return img
}

// bbox is an axis-aligned box in pixel coordinates.
type bbox struct{ x0, y0, x1, y1 float64 }

func (b bbox) grow(m float64) bbox { return bbox{b.x0 - m, b.y0 - m, b.x1 + m, b.y1 + m} }

func (b bbox) clip(s int) (x0, y0, x1, y1 int) {
	f := func(v float64) int { return min(max(int(math.Floor(v)), 0), s) }
	return f(b.x0 - 1), f(b.y0 - 1), f(b.x1 + 2), f(b.y1 + 2)
}

// polygon is a convex or concave polygon given by its vertices.
type polygon [][2]float64

// sdf is the exact signed distance to the polygon (Quílez's formulation: the distance to
// the nearest edge, negative where the winding test says inside).
func (p polygon) sdf(x, y float64) float64 {
	d := math.Inf(1)
	inside := false
	for i, j := 0, len(p)-1; i < len(p); j, i = i, i+1 {
		ex, ey := p[j][0]-p[i][0], p[j][1]-p[i][1]
		wx, wy := x-p[i][0], y-p[i][1]
		t := math.Min(math.Max((wx*ex+wy*ey)/(ex*ex+ey*ey), 0), 1)
		bx, by := wx-ex*t, wy-ey*t
		d = math.Min(d, bx*bx+by*by)
		c1, c2, c3 := y >= p[i][1], y < p[j][1], ex*wy > ey*wx
		if (c1 && c2 && c3) || (!c1 && !c2 && !c3) {
			inside = !inside
		}
	}
	d = math.Sqrt(d)
	if inside {
		return -d
	}
	return d
}

func (p polygon) box() bbox {
	b := bbox{math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)}
	for _, v := range p {
		b.x0, b.y0 = math.Min(b.x0, v[0]), math.Min(b.y0, v[1])
		b.x1, b.y1 = math.Max(b.x1, v[0]), math.Max(b.y1, v[1])
	}
	return b
}

func (p polygon) shift(dx, dy float64) polygon {
	q := make(polygon, len(p))
	for i, v := range p {
		q[i] = [2]float64{v[0] + dx, v[1] + dy}
	}
	return q
}

// regular is the regular n-gon of circumradius r around (cx, cy), its first vertex at
// angle rot (radians, y down).
func regular(n int, cx, cy, r, rot float64) polygon {
	p := make(polygon, n)
	for k := range p {
		a := rot + 2*math.Pi*float64(k)/float64(n)
		p[k] = [2]float64{cx + r*math.Cos(a), cy + r*math.Sin(a)}
	}
	return p
}

func rect(x0, y0, x1, y1 float64) polygon {
	return polygon{{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}}
}

func circleSDF(cx, cy, r float64) func(x, y float64) float64 {
	return func(x, y float64) float64 { return math.Hypot(x-cx, y-cy) - r }
}

func circleBox(cx, cy, r float64) bbox { return bbox{cx - r, cy - r, cx + r, cy + r} }

func constant(c rgb) func(x, y float64) rgb { return func(x, y float64) rgb { return c } }
