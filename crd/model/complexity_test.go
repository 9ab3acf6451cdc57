package model

import "testing"

// The integers of /work/shared/crd_reference.py macs (docs/crd.md §5.5): layer
// arithmetic that reproduces torchprofile 0.0.4 on the reference modules.
func TestCountMatchesReference(t *testing.T) {
	inst, batch := NormInstance, NormBatch
	cases := []struct {
		name             string
		spec             Spec
		params           int64
		conv, v003, v002 int64
	}{
		{"resnet_9blocks ngf64", Spec{Arch: ArchResnet, NGF: 64, InC: 3, OutC: 3, Blocks: 9, Norm: inst}, 11378179, 56799264768, 56799264768, 56831770624},
		{"mobile ngf64", Spec{Arch: ArchMobileResnet, NGF: 64, InC: 3, OutC: 3, Blocks: 9, Norm: inst}, 1987075, 18314428416, 18314428416, 18365808640},
		{"mobile ngf16", Spec{Arch: ArchMobileResnet, NGF: 16, InC: 3, OutC: 3, Blocks: 9, Norm: inst}, 137347, 1407713280, 1407713280, 1420558336},
		{"unet ngf64 batch", Spec{Arch: ArchUnet, NGF: 64, InC: 3, OutC: 3, Downs: 8, Norm: batch}, 54413955, 18140364800, 18143334400, 18140364800},
		{"unet ngf16 batch", Spec{Arch: ArchUnet, NGF: 16, InC: 3, OutC: 3, Downs: 8, Norm: batch}, 3404451, 1218707456, 1219449856, 1218707456},
		{"unet ngf64 instance", Spec{Arch: ArchUnet, NGF: 64, InC: 3, OutC: 3, Downs: 8, Norm: inst}, 54409603, 18140364800, 18140364800, 18143334400},
		{"D in3 ndf64", Spec{Arch: ArchPatchGAN, NDF: 64, InC: 3, Layers: 3, Norm: inst}, 2764737, 3146809344, 3146809344, 3148087808},
		{"D in6 ndf128", Spec{Arch: ArchPatchGAN, NDF: 128, InC: 6, Layers: 3, Norm: inst}, 11040641, 12572491776, 12572491776, 12575048704},
		{"D in6 ndf128 batch", Spec{Arch: ArchPatchGAN, NDF: 128, InC: 6, Layers: 3, Norm: batch}, 11042433, 12572491776, 12575048704, 12572491776},
	}
	for _, c := range cases {
		p, err := Count(c.spec, 256, 256)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if p.Params != c.params {
			t.Errorf("%s: params = %d; want %d", c.name, p.Params, c.params)
		}
		for _, w := range []struct {
			conv Convention
			want int64
		}{{MACsConv, c.conv}, {MACsV003, c.v003}, {MACsV002, c.v002}} {
			if got := p.MACs(w.conv); got != w.want {
				t.Errorf("%s: MACs(%s) = %d; want %d", c.name, w.conv, got, w.want)
			}
		}
	}
}
