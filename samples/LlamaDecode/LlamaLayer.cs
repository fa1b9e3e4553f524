using System.Diagnostics;
using System.Numerics.Tensors;

using Quantization;

namespace Quantization.Samples;

/// <summary>One decoder layer: pre-norm attention and pre-norm SwiGLU feed-forward, each added to the residual stream.</summary>
/// <param name="config">The shape.</param>
/// <param name="inputNorm">The attention's RMSNorm weight.</param>
/// <param name="q">The query projection.</param>
/// <param name="k">The key projection.</param>
/// <param name="v">The value projection.</param>
/// <param name="o">The output projection.</param>
/// <param name="postNorm">The feed-forward's RMSNorm weight.</param>
/// <param name="gate">The gate projection.</param>
/// <param name="up">The up projection.</param>
/// <param name="down">The down projection.</param>
public sealed class LlamaLayer(LlamaConfig config, float[] inputNorm, LlamaLinear q, LlamaLinear k, LlamaLinear v, LlamaLinear o, float[] postNorm, LlamaLinear gate, LlamaLinear up, LlamaLinear down)
{
    private readonly LlamaLinear[] _linears = [q, k, v, o, gate, up, down];
    private int _threads = 1;

    /// <summary>Gets the bytes of the layer's weights.</summary>
    public long WeightBytes => _linears.Sum(l => l.WeightBytes) + ((inputNorm.Length + postNorm.Length) * sizeof(float));

    /// <summary>Sets the threads of every linear and of attention.</summary>
    /// <param name="threads">The threads.</param>
    public void SetThreads(int threads)
    {
        _threads = threads;
        foreach (LlamaLinear linear in _linears)
        {
            linear.Threads = threads;
        }
    }

    /// <summary>Runs the layer on a block of tokens, updating the residual stream <paramref name="x"/> in place.</summary>
    internal void Forward(int layer, float[] x, int tokens, float[] cos, float[] sin, DecodeCache cache, LlamaModel.Workspace work, DecodeProfile? profile)
    {
        long time = Stopwatch.GetTimestamp();
        int hidden = config.HiddenSize, kv = config.KvWidth, half = config.HeadDim / 2, ffn = config.IntermediateSize;
        for (int t = 0; t < tokens; t++)
        {
            TransformerPrimitives.RmsNorm(x.AsSpan(t * hidden, hidden), inputNorm, config.RmsNormEps, work.Normed.AsSpan(t * hidden, hidden));
        }

        time = profile?.Add(0, time) ?? time;
        q.Forward(work.Normed, work.Queries, tokens);
        k.Forward(work.Normed, work.Keys, tokens);
        v.Forward(work.Normed, work.Values, tokens);
        time = profile?.Add(1, time) ?? time;
        for (int t = 0; t < tokens; t++)
        {
            ReadOnlySpan<float> c = cos.AsSpan(t * half, half), s = sin.AsSpan(t * half, half);
            TransformerPrimitives.ApplyRotaryEmbedding(work.Queries.AsSpan(t * hidden, hidden), c, s);
            TransformerPrimitives.ApplyRotaryEmbedding(work.Keys.AsSpan(t * kv, kv), c, s);
        }

        time = profile?.Add(0, time) ?? time;

        // The block joins the cache, then attends causally in one call: token t sees the cache up to and including itself.
        // A prompt's attention splits its KV heads between threads; one token's stays on this thread, as its few hundred
        // microseconds would not pay for waking thread-pool workers while the linears' helpers still poll for work.
        cache.Append(layer, work.Keys, work.Values, tokens);
        cache.Attend(layer, work.Queries, work.Attention, tokens, tokens > 1 ? _threads : 1);
        time = profile?.Add(2, time) ?? time;
        o.Forward(work.Attention, work.Projected, tokens);
        time = profile?.Add(3, time) ?? time;
        TensorPrimitives.Add(x, work.Projected, x);
        for (int t = 0; t < tokens; t++)
        {
            TransformerPrimitives.RmsNorm(x.AsSpan(t * hidden, hidden), postNorm, config.RmsNormEps, work.Normed.AsSpan(t * hidden, hidden));
        }

        time = profile?.Add(0, time) ?? time;
        gate.Forward(work.Normed, work.Gate, tokens);
        up.Forward(work.Normed, work.Up, tokens);
        time = profile?.Add(4, time) ?? time;
        TransformerPrimitives.SiluGate(work.Gate, work.Up, work.Gate);
        time = profile?.Add(0, time) ?? time;
        down.Forward(work.Gate.AsSpan(0, tokens * ffn), work.Projected, tokens);
        time = profile?.Add(5, time) ?? time;
        TensorPrimitives.Add(x, work.Projected, x);
        profile?.Add(0, time);
    }
}
