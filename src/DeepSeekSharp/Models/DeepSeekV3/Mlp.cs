using DeepSeekSharp.Autograd;
using DeepSeekSharp.Nn;
using DeepSeekSharp.Tensors;

namespace DeepSeekSharp.Models.DeepSeekV3;

/// <summary>SwiGLU MLP: down_proj(silu(gate_proj(x)) ⊙ up_proj(x)). Dense layers, routed and shared experts.</summary>
public sealed class Mlp : Layer
{
    public Mlp(int hidden, int intermediate, bool materialize)
    {
        GateProj = Child("gate_proj", new Linear(hidden, intermediate, materialize));
        UpProj = Child("up_proj", new Linear(hidden, intermediate, materialize));
        DownProj = Child("down_proj", new Linear(intermediate, hidden, materialize));
    }

    public Linear GateProj { get; }
    public Linear UpProj { get; }
    public Linear DownProj { get; }

    /// <summary>The SwiGLU op keeps its inputs for the backward in FP8 (DeepSeek-V3's FP8 recipe; set by precision fp8 and
    /// <c>fp8_swiglu_cache</c>). An FP8 down_proj keeps its own FP8 copy of the SwiGLU output.</summary>
    public bool Fp8SwigluCache { get; set; }

    /// <param name="x">[N, H]</param>
    /// <returns>[N, H]</returns>
    protected override Tensor Compute(Tensor x)
    {
        Tensor gate = GateProj.Forward(x), up = UpProj.Forward(x);                       // [N, I] each
        Tensor h = Functional.SiluMul(gate, up, fp8InputCache: Fp8SwigluCache);         // silu(gate) ⊙ up
        return DownProj.Forward(h);
    }
}
