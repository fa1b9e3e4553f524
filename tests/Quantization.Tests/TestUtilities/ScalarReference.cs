namespace Quantization.Tests.TestUtilities;

/// <summary>
/// The scalar specification, written from the peers' published formulas and independently of the library's
/// kernels: element by element, with brute-force index arithmetic. Every SIMD tier must agree with it bit for bit.
/// </summary>
internal static class ScalarReference
{
    /// <summary>
    /// Quantizes one value. ONNX Runtime (MLAS): nearbyintf(x / scale) + zp, clamped. PyTorch (fbgemm / ATen quantize_val):
    /// zp + nearbyint(x * (1 / scale)). ggml quantize_row_q8_0_ref: roundf(x * id). NaN clamps to the lower bound.
    /// </summary>
    public static int QuantizeWithFactor(float x, float factor, int zeroPoint, int lo, int hi, NumericConvention convention)
    {
        float scaled = IsDivide(convention) ? x / factor : x * factor;
        float rounded = convention == NumericConvention.GgmlQ8_0
            ? MathF.Round(scaled, MidpointRounding.AwayFromZero)
            : MathF.Round(scaled, MidpointRounding.ToEven);
        float shifted = rounded + zeroPoint;
        if (float.IsNaN(shifted) || shifted <= lo)
        {
            return lo;
        }

        return shifted >= hi ? hi : (int)shifted;
    }

    /// <summary>Quantizes with a stored scale (for the reciprocal conventions the factor is 1 / scale, or 0 for scale 0).</summary>
    public static int Quantize(float x, float scale, int zeroPoint, int lo, int hi, NumericConvention convention) =>
        QuantizeWithFactor(x, IsDivide(convention) ? scale : (scale == 0f ? 0f : 1f / scale), zeroPoint, lo, hi, convention);

    public static float Dequantize(int q, float scale, int zeroPoint) => (q - zeroPoint) * scale;

    public static (float Min, float Max) MinMax(ReadOnlySpan<float> values)
    {
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        foreach (float v in values)
        {
            min = Math.Min(min, v);
            max = Math.Max(max, v);
        }

        return (min + 0f, max + 0f);
    }

    /// <summary>Scale, zero point and the quantize factor for a range, per convention.</summary>
    public static (float Scale, int ZeroPoint, float Factor) Parameters(float min, float max, int qmin, int qmax, bool symmetric, NumericConvention convention)
    {
        if (convention == NumericConvention.GgmlQ8_0)
        {
            // ggml: amax = max |x|; d = amax / 127; id = d ? 1/d : 0; y.d = fp16(d). An id that overflows is taken as 0.
            float amax = Math.Max(Math.Abs(min), Math.Abs(max));
            float d = amax / qmax;
            float id = d == 0f ? 0f : 1f / d;
            return ((float)(Half)d, 0, float.IsInfinity(id) ? 0f : id);
        }

        float rmin = Math.Min(min, 0f);
        float rmax = Math.Max(max, 0f);
        if (convention == NumericConvention.Torch)
        {
            // torch.ao _calculate_qparams, in float32 tensors.
            const float eps = 1.1920929e-07f;
            if (symmetric)
            {
                float maxValPos = Math.Max(-rmin, rmax);
                float s = Math.Max(maxValPos / ((qmax - qmin) / 2f), eps);
                return (s, qmin < 0 ? 0 : qmin == 0 && qmax == 255 ? 128 : (qmin + qmax) / 2, 1f / s);
            }

            float asymmetric = Math.Max(float.IsFinite(rmax - rmin) ? (rmax - rmin) / (qmax - qmin) : (float)(((double)rmax - rmin) / (qmax - qmin)), eps);
            int zp = Math.Clamp(qmin - (int)MathF.Round(rmin / asymmetric), qmin, qmax);
            return (asymmetric, zp, 1f / asymmetric);
        }

        // onnxruntime quant_utils.compute_scale_zp (Golden Stick's formula is the same one over the full range).
        if (symmetric)
        {
            float absmax = Math.Max(Math.Abs(rmin), Math.Abs(rmax));
            rmin = -absmax;
            rmax = absmax;
        }

        // The library's one extension: where rmax - rmin overflows float, the width is taken in double.
        double dr = float.IsFinite(rmax - rmin) ? rmax - rmin : (double)rmax - rmin;
        double scale = dr / ((double)qmax - qmin);
        if (scale < 1.1754943508222875e-38)
        {
            return (1f, 0, 1f);
        }

        double zeroPoint = symmetric ? Math.Round((qmin + qmax) / 2.0) : Math.Round(qmin - (rmin / scale));
        return ((float)scale, (int)zeroPoint, (float)scale);
    }

    /// <summary>The flat parameter index of a flat element index, by unravelling coordinates.</summary>
    public static int ParameterIndex(int[] shape, QuantizationGranularity granularity, int flat)
    {
        int rank = shape.Length;
        int[] coords = new int[rank];
        for (int d = rank - 1; d >= 0; d--)
        {
            coords[d] = flat % shape[d];
            flat /= shape[d];
        }

        int axis = granularity.Axis < 0 ? granularity.Axis + rank : granularity.Axis;
        switch (granularity.Kind)
        {
            case GranularityKind.PerChannel:
                return coords[axis];
            case GranularityKind.PerToken:
                return Ravel(coords[..^1], shape[..^1]);
            case GranularityKind.PerGroup:
                int[] parameterShape = (int[])shape.Clone();
                parameterShape[axis] = (parameterShape[axis] + granularity.GroupSize - 1) / granularity.GroupSize;
                coords[axis] /= granularity.GroupSize;
                return Ravel(coords, parameterShape);
            default:
                return 0;
        }
    }

    public static int ParameterCount(int[] shape, QuantizationGranularity granularity)
    {
        int elements = shape.Aggregate(1, (a, b) => a * b);
        if (elements == 0)
        {
            return granularity.GetParameterShape(shape).Aggregate(1, (a, b) => a * b);
        }

        int count = 0;
        for (int i = 0; i < elements; i++)
        {
            count = Math.Max(count, ParameterIndex(shape, granularity, i) + 1);
        }

        return count;
    }

    /// <summary>Dynamic quantization by brute force: gather each parameter's elements, compute, quantize.</summary>
    public static (byte[] Data, float[] Scales, int[] ZeroPoints) QuantizeDynamic(float[] values, int[] shape, QuantizationScheme scheme)
    {
        int count = ParameterCount(shape, scheme.Granularity);
        float[] mins = new float[count], maxs = new float[count];
        Array.Fill(mins, float.PositiveInfinity);
        Array.Fill(maxs, float.NegativeInfinity);
        for (int i = 0; i < values.Length; i++)
        {
            int p = ParameterIndex(shape, scheme.Granularity, i);
            mins[p] = Math.Min(mins[p], values[i]);
            maxs[p] = Math.Max(maxs[p], values[i]);
        }

        float[] scales = new float[count], factors = new float[count];
        int[] zeroPoints = new int[count];
        for (int p = 0; p < count; p++)
        {
            (scales[p], zeroPoints[p], factors[p]) = float.IsInfinity(mins[p])
                ? Parameters(0f, 0f, scheme.QuantMin, scheme.QuantMax, scheme.Symmetric, scheme.Convention)
                : Parameters(mins[p], maxs[p], scheme.QuantMin, scheme.QuantMax, scheme.Symmetric, scheme.Convention);
        }

        byte[] data = new byte[values.Length];
        int lo = scheme.Type.GetMinValue(), hi = scheme.Type.GetMaxValue();
        for (int i = 0; i < values.Length; i++)
        {
            int p = ParameterIndex(shape, scheme.Granularity, i);
            data[i] = (byte)QuantizeWithFactor(values[i], factors[p], zeroPoints[p], lo, hi, scheme.Convention);
        }

        return (data, scales, zeroPoints);
    }

    /// <summary>An int8 dot product summed in int32 (unchecked: int32 addition wraps, the same on every path).</summary>
    public static int DotInt8(ReadOnlySpan<sbyte> x, ReadOnlySpan<sbyte> y)
    {
        int sum = 0;
        for (int i = 0; i < x.Length; i++)
        {
            sum = unchecked(sum + (x[i] * y[i]));
        }

        return sum;
    }

    /// <summary>
    /// The W8A8 linear layer: each token quantized symmetric int8 [-127, 127] (ONNX), exact int32 dot products with the
    /// int8 weight rows, then fma((float)sum, s_x * s_w, b).
    /// </summary>
    public static float[] LinearW8A8(float[] input, int tokens, sbyte[] weight, float[] weightScales, float[] bias, int outFeatures, int inFeatures)
    {
        float[] output = new float[tokens * outFeatures];
        sbyte[] q = new sbyte[inFeatures];
        for (int t = 0; t < tokens; t++)
        {
            float[] row = input.AsSpan(t * inFeatures, inFeatures).ToArray();
            (float min, float max) = MinMax(row);
            (float scale, _, float factor) = Parameters(min, max, -127, 127, symmetric: true, NumericConvention.Onnx);
            for (int k = 0; k < inFeatures; k++)
            {
                q[k] = (sbyte)QuantizeWithFactor(row[k], factor, 0, -128, 127, NumericConvention.Onnx);
            }

            for (int n = 0; n < outFeatures; n++)
            {
                int sum = DotInt8(q, weight.AsSpan(n * inFeatures, inFeatures));
                output[(t * outFeatures) + n] = MathF.FusedMultiplyAdd(sum, scale * weightScales[n], bias[n]);
            }
        }

        return output;
    }

    /// <summary>
    /// The W8A16 linear layer: per output channel, four float accumulators (feature index mod 4) each updated with one
    /// fused multiply-add in feature order, added as (a0 + a1) + (a2 + a3), then fma(sum, s_w, b).
    /// </summary>
    public static float[] LinearW8A16(float[] input, int tokens, sbyte[] weight, float[] weightScales, float[] bias, int outFeatures, int inFeatures)
    {
        float[] output = new float[tokens * outFeatures];
        for (int t = 0; t < tokens; t++)
        {
            for (int n = 0; n < outFeatures; n++)
            {
                float[] a = new float[4];
                for (int k = 0; k < inFeatures; k++)
                {
                    a[k % 4] = MathF.FusedMultiplyAdd(weight[(n * inFeatures) + k], input[(t * inFeatures) + k], a[k % 4]);
                }

                output[(t * outFeatures) + n] = MathF.FusedMultiplyAdd((a[0] + a[1]) + (a[2] + a[3]), weightScales[n], bias[n]);
            }
        }

        return output;
    }

    private static bool IsDivide(NumericConvention convention) =>
        convention == NumericConvention.Onnx || convention == NumericConvention.GoldenStick;

    private static int Ravel(int[] coords, int[] shape)
    {
        int index = 0;
        for (int d = 0; d < shape.Length; d++)
        {
            index = (index * shape[d]) + coords[d];
        }

        return index;
    }
}
