using System.Numerics;
using System.Runtime.InteropServices;

using Quantization;

namespace Quantization.Samples;

/// <summary>One linear layer of the decoder, <c>y = x W^T</c>: float (the baseline) or the library's <see cref="QuantizedLinear"/>.</summary>
public sealed class LlamaLinear
{
    private readonly float[]? _float;
    private readonly QuantizedLinear? _quantized;
    private readonly QuantizedLinearMode _mode;
    private readonly QuantizedLinearMode _prefillMode;

    private LlamaLinear(int outFeatures, int inFeatures, long weightBytes, float[]? weight, QuantizedLinear? quantized, QuantizedLinearMode mode, QuantizedLinearMode prefillMode)
    {
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
        WeightBytes = weightBytes;
        _float = weight;
        _quantized = quantized;
        _mode = mode;
        _prefillMode = prefillMode;
    }

    /// <summary>Gets the output features.</summary>
    public int OutFeatures { get; }

    /// <summary>Gets the input features.</summary>
    public int InFeatures { get; }

    /// <summary>Gets the bytes of the weight as the layer holds it (codes, scales and zero points).</summary>
    public long WeightBytes { get; }

    /// <summary>Gets or sets the threads one call uses.</summary>
    public int Threads { get; set; } = 1;

    /// <summary>Creates a float layer.</summary>
    /// <param name="weight">The weight, [out, in] row-major.</param>
    /// <param name="outFeatures">The output features.</param>
    /// <param name="inFeatures">The input features.</param>
    /// <returns>The layer.</returns>
    public static LlamaLinear Float(float[] weight, int outFeatures, int inFeatures) =>
        new(outFeatures, inFeatures, (long)weight.Length * sizeof(float), weight, null, default, default);

    /// <summary>Creates a quantized layer that runs one token in <paramref name="mode"/> and blocks in <paramref name="prefillMode"/>.</summary>
    /// <param name="weight">The weight, [out, in].</param>
    /// <param name="mode">The mode for one token (decoding); its weight width must be the tensor's.</param>
    /// <param name="prefillMode">The mode for several tokens (prefill), of the same weight width.</param>
    /// <returns>The layer.</returns>
    public static LlamaLinear Quantized(QuantizedTensor weight, QuantizedLinearMode mode, QuantizedLinearMode prefillMode) =>
        new(weight.Shape[0], weight.Shape[1], weight.SizeInBytes, null, new QuantizedLinear(weight), mode, prefillMode);

    /// <summary>Computes <c>output = input W^T</c> for <paramref name="tokens"/> rows.</summary>
    /// <param name="input">[tokens, in].</param>
    /// <param name="output">[tokens, out].</param>
    /// <param name="tokens">The rows.</param>
    public void Forward(ReadOnlySpan<float> input, Span<float> output, int tokens)
    {
        if (_quantized is not null)
        {
            _quantized.MaxDegreeOfParallelism = Threads;
            _quantized.Forward(input, output, tokens, tokens > 1 ? _prefillMode : _mode);
            return;
        }

        int rowBlocks = (OutFeatures + 3) / 4;
        if (Threads <= 1)
        {
            FloatRows(input, output, tokens, 0, OutFeatures);
            return;
        }

        // Threads take contiguous ranges of rows; spans cannot enter a lambda, so the arrays are pinned for its duration.
        float[] x = input.ToArray();
        float[] y = new float[output.Length];
        int per = (rowBlocks + Threads - 1) / Threads;
        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, i =>
            FloatRows(x, y, tokens, Math.Min(OutFeatures, i * per * 4), Math.Min(OutFeatures, (i + 1) * per * 4)));
        y.CopyTo(output);
    }

    /// <summary>The float baseline: four rows at a time (each read once per token block from cache), vector dot products.</summary>
    private void FloatRows(ReadOnlySpan<float> input, Span<float> output, int tokens, int first, int end)
    {
        int k = InFeatures, n = OutFeatures, width = Vector<float>.Count, vectors = k / width * width;
        ReadOnlySpan<float> w = _float;
        int row = first;
        for (; row + 4 <= end; row += 4)
        {
            ReadOnlySpan<Vector<float>> w0 = MemoryMarshal.Cast<float, Vector<float>>(w.Slice(row * k, vectors));
            ReadOnlySpan<Vector<float>> w1 = MemoryMarshal.Cast<float, Vector<float>>(w.Slice((row + 1) * k, vectors));
            ReadOnlySpan<Vector<float>> w2 = MemoryMarshal.Cast<float, Vector<float>>(w.Slice((row + 2) * k, vectors));
            ReadOnlySpan<Vector<float>> w3 = MemoryMarshal.Cast<float, Vector<float>>(w.Slice((row + 3) * k, vectors));
            for (int t = 0; t < tokens; t++)
            {
                ReadOnlySpan<float> xt = input.Slice(t * k, k);
                ReadOnlySpan<Vector<float>> xv = MemoryMarshal.Cast<float, Vector<float>>(xt[..vectors]);
                Vector<float> a0 = default, a1 = default, a2 = default, a3 = default;
                for (int i = 0; i < xv.Length; i++)
                {
                    Vector<float> v = xv[i];
                    a0 = Vector.FusedMultiplyAdd(v, w0[i], a0);
                    a1 = Vector.FusedMultiplyAdd(v, w1[i], a1);
                    a2 = Vector.FusedMultiplyAdd(v, w2[i], a2);
                    a3 = Vector.FusedMultiplyAdd(v, w3[i], a3);
                }

                Span<float> yt = output.Slice(t * n, n);
                yt[row] = Vector.Sum(a0) + Tail(xt, w.Slice(row * k, k), vectors);
                yt[row + 1] = Vector.Sum(a1) + Tail(xt, w.Slice((row + 1) * k, k), vectors);
                yt[row + 2] = Vector.Sum(a2) + Tail(xt, w.Slice((row + 2) * k, k), vectors);
                yt[row + 3] = Vector.Sum(a3) + Tail(xt, w.Slice((row + 3) * k, k), vectors);
            }
        }

        for (; row < end; row++)
        {
            for (int t = 0; t < tokens; t++)
            {
                output[(t * n) + row] = System.Numerics.Tensors.TensorPrimitives.Dot(input.Slice(t * k, k), w.Slice(row * k, k));
            }
        }
    }

    private static float Tail(ReadOnlySpan<float> x, ReadOnlySpan<float> w, int from)
    {
        float sum = 0;
        for (int i = from; i < x.Length; i++)
        {
            sum += x[i] * w[i];
        }

        return sum;
    }
}
