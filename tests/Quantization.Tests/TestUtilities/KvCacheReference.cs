namespace Quantization.Tests.TestUtilities;

/// <summary>
/// The scalar specification of the int8 KV cache, written independently of the library: which tokens are quantized,
/// their int8 values and scales (per element, from <see cref="ScalarReference"/>), and decode attention on them, element
/// by element in double where the algorithm allows.
/// </summary>
internal sealed class KvCacheReference
{
    private readonly KvCacheOptions _options;
    private readonly List<float[]>[] _keys;
    private readonly List<float[]>[] _values;

    public KvCacheReference(KvCacheOptions options)
    {
        _options = options;
        _keys = [.. Enumerable.Range(0, options.Layers).Select(_ => new List<float[]>())];
        _values = [.. Enumerable.Range(0, options.Layers).Select(_ => new List<float[]>())];
    }

    /// <summary>Records tokens laid out [tokens, KV heads, head dim].</summary>
    public void Append(int layer, float[] keys, float[] values, int tokens)
    {
        int width = _options.KvHeads * _options.HeadDim;
        for (int t = 0; t < tokens; t++)
        {
            _keys[layer].Add(keys.AsSpan(t * width, width).ToArray());
            _values[layer].Add(values.AsSpan(t * width, width).ToArray());
        }
    }

    /// <summary>The tokens of a layer that are int8 (the rest, KIVI's window, are float).</summary>
    public int Quantized(int layer)
    {
        int count = _keys[layer].Count;
        KvCacheScheme scheme = _options.Scheme;
        return scheme.Kind == KvCacheSchemeKind.Kivi ? count / scheme.ResidentTokens * scheme.ResidentTokens : count;
    }

    /// <summary>One KV head's stored tokens: int8 value and scale per element (scale NaN for float window tokens, then q is unused and Float holds the value).</summary>
    public Stored Keys(int layer, int head) => Store(layer, head, keys: true);

    public Stored Values(int layer, int head) => Store(layer, head, keys: false);

    /// <summary>
    /// The cache's algorithm in scalar: each query head quantized to int16 with channel scales folded in (<c>x = q * c</c>,
    /// s = max |x| / 32767, round half to even), exact integer dots, per-token key scales, then softmax and the weighted
    /// sum of values in double.
    /// </summary>
    /// <returns>The output, and for each query head the size of its weighted sums, <c>max_d sum_t p_t |v_t[d]|</c>: the scale that float rounding errors grow with.</returns>
    public (double[] Output, double[] Magnitudes) Attend(int layer, float[] query)
    {
        int group = _options.QueryHeadsPerKvHead, dim = _options.HeadDim;
        double[] output = new double[query.Length];
        double[] magnitudes = new double[_options.QueryHeads];
        float inverseSqrt = 1f / MathF.Sqrt(dim);
        for (int head = 0; head < _options.KvHeads; head++)
        {
            Stored keys = Keys(layer, head), values = Values(layer, head);
            for (int j = 0; j < group; j++)
            {
                int qh = (head * group) + j;
                float[] q = query.AsSpan(qh * dim, dim).ToArray();
                double[] scores = new double[keys.Tokens];
                for (int t = 0; t < keys.Tokens; t++)
                {
                    if (t >= keys.QuantizedTokens)
                    {
                        double s = 0;
                        for (int d = 0; d < dim; d++)
                        {
                            s += (double)(q[d] * inverseSqrt) * keys.Float[t, d];
                        }

                        scores[t] = s;
                        continue;
                    }

                    // Channel scales (static, KIVI) are folded into the query; a per-token scale (dynamic) multiplies the dot.
                    bool perToken = _options.Scheme.Kind == KvCacheSchemeKind.DynamicPerTokenHead;
                    float[] x = new float[dim];
                    for (int d = 0; d < dim; d++)
                    {
                        x[d] = perToken ? q[d] : q[d] * keys.Scale[t, d];
                    }

                    float amax = x.Max(MathF.Abs);
                    float qs = amax / 32767f;
                    long dot = 0;
                    for (int d = 0; d < dim; d++)
                    {
                        long q16 = amax == 0f ? 0 : (long)Math.Clamp(MathF.Round(x[d] / qs), -32767f, 32767f);
                        dot += q16 * keys.Q[t, d];
                    }

                    scores[t] = dot * (double)(qs * inverseSqrt) * (perToken ? keys.Scale[t, 0] : 1.0);
                }

                magnitudes[qh] = SoftmaxWeightedSum(scores, values, output.AsSpan(qh * dim, dim));
            }
        }

        return (output, magnitudes);
    }

    /// <summary>Plain attention in double on the dequantized keys and values with the unquantized query.</summary>
    public (double[] Output, double[] Magnitudes) AttendDequantized(int layer, float[] query)
    {
        int group = _options.QueryHeadsPerKvHead, dim = _options.HeadDim;
        double[] output = new double[query.Length];
        double[] magnitudes = new double[_options.QueryHeads];
        for (int head = 0; head < _options.KvHeads; head++)
        {
            Stored keys = Keys(layer, head), values = Values(layer, head);
            for (int j = 0; j < group; j++)
            {
                int qh = (head * group) + j;
                double[] scores = new double[keys.Tokens];
                for (int t = 0; t < keys.Tokens; t++)
                {
                    for (int d = 0; d < dim; d++)
                    {
                        scores[t] += (double)query[(qh * dim) + d] * keys.Value(t, d) / Math.Sqrt(dim);
                    }
                }

                magnitudes[qh] = SoftmaxWeightedSum(scores, values, output.AsSpan(qh * dim, dim));
            }
        }

        return (output, magnitudes);
    }

    /// <summary>Adds softmax(scores) · values to the output head; returns the largest Σ p·|v| over its dimensions, the scale its error is measured against.</summary>
    private static double SoftmaxWeightedSum(double[] scores, Stored values, Span<double> output)
    {
        double max = scores.Max();
        double[] p = [.. scores.Select(s => Math.Exp(s - max))];
        double sum = p.Sum();
        double[] magnitude = new double[output.Length];
        for (int t = 0; t < scores.Length; t++)
        {
            for (int d = 0; d < output.Length; d++)
            {
                output[d] += p[t] / sum * values.Value(t, d);
                magnitude[d] += p[t] / sum * Math.Abs(values.Value(t, d));
            }
        }

        return magnitude.Max();
    }

    private Stored Store(int layer, int head, bool keys)
    {
        List<float[]> rows = keys ? _keys[layer] : _values[layer];
        int dim = _options.HeadDim, tokens = rows.Count, quantized = Quantized(layer);
        Stored stored = new(tokens, quantized, dim);
        float X(int t, int d) => rows[t][(head * dim) + d];
        KvCacheScheme scheme = _options.Scheme;
        for (int t = 0; t < tokens; t++)
        {
            for (int d = 0; d < dim; d++)
            {
                stored.Float[t, d] = X(t, d);
            }
        }

        for (int t = 0; t < quantized; t++)
        {
            for (int d = 0; d < dim; d++)
            {
                float scale;
                if (scheme.Kind == KvCacheSchemeKind.StaticPerChannel || (keys && scheme.Kind == KvCacheSchemeKind.StaticKeysPerChannel))
                {
                    scale = (keys ? scheme.KeyScales : scheme.ValueScales)[(((layer * _options.KvHeads) + head) * dim) + d];
                }
                else if (keys && scheme.Kind == KvCacheSchemeKind.Kivi)
                {
                    int first = t / scheme.GroupSize * scheme.GroupSize;
                    float amax = Enumerable.Range(first, scheme.GroupSize).Max(u => MathF.Abs(X(u, d)));
                    scale = ScalarReference.Parameters(-amax, amax, -127, 127, symmetric: true, NumericConvention.Onnx).Scale;
                }
                else
                {
                    float amax = Enumerable.Range(0, dim).Max(e => MathF.Abs(X(t, e)));
                    scale = ScalarReference.Parameters(-amax, amax, -127, 127, symmetric: true, NumericConvention.Onnx).Scale;
                }

                stored.Scale[t, d] = scale;
                stored.Q[t, d] = ScalarReference.Quantize(X(t, d), scale, 0, -128, 127, NumericConvention.Onnx);
            }
        }

        return stored;
    }

    /// <summary>One KV head's tokens: the first <see cref="QuantizedTokens"/> as int8 and per-element scales, the rest as float.</summary>
    internal sealed class Stored(int tokens, int quantizedTokens, int dim)
    {
        public int Tokens { get; } = tokens;

        public int QuantizedTokens { get; } = quantizedTokens;

        public int[,] Q { get; } = new int[tokens, dim];

        public float[,] Scale { get; } = new float[tokens, dim];

        public float[,] Float { get; } = new float[tokens, dim];

        /// <summary>The stored value as the cache dequantizes it: <c>q * scale</c> in float, or the float window value.</summary>
        public float Value(int t, int d) => t < QuantizedTokens ? Q[t, d] * Scale[t, d] : Float[t, d];
    }
}
