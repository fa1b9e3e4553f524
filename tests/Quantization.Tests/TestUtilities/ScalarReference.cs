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
                parameterShape[axis] /= granularity.GroupSize;
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
