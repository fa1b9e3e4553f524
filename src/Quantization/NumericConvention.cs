using System.Diagnostics.CodeAnalysis;

using static System.FormattableString;

namespace Quantization;

/// <summary>
/// A named numeric convention: how a (min, max) range becomes a scale and zero point, and how values are rounded
/// when quantized. Each convention reproduces one peer's published arithmetic bit for bit.
/// </summary>
/// <remarks>
/// <list type="table">
/// <item><term><see cref="Onnx"/></term><description>ONNX Runtime (the default): scale computed in double, then cast; symmetric
/// signed types use the restricted range ([-127, 127] for int8); quantize divides by the scale and rounds half to even;
/// a scale below the smallest normal float becomes scale 1, zero point 0.</description></item>
/// <item><term><see cref="Torch"/></term><description>PyTorch (torch.ao observers and quantize_per_tensor): full range, scale
/// computed in float (a / 127.5 for symmetric int8) and floored at float epsilon; quantize multiplies by the reciprocal of
/// the scale and rounds half to even.</description></item>
/// <item><term><see cref="GgmlQ8_0"/></term><description>ggml's Q8_0 reference: symmetric int8 only, d = amax / 127, scale stored
/// as fp16; quantize multiplies by the reciprocal and rounds half away from zero; an all-zero block has scale 0. Use it with
/// <c>QuantizationGranularity.PerGroup(32)</c> for the Q8_0 block layout. Dynamic quantization (which computes d) multiplies
/// by 1/d with d before fp16 rounding, as ggml does, and is bit-exact with it; quantizing with given parameters only has
/// the stored fp16 scale and multiplies by its reciprocal, which differs from ggml on about 1% of values.</description></item>
/// <item><term><see cref="GoldenStick"/></term><description>MindSpore Golden Stick: (max - min) / (qmax - qmin) over the full range,
/// so 2a / 255 for symmetric int8; otherwise ONNX Runtime's arithmetic.</description></item>
/// </list>
/// Dequantization is <c>(q - zeroPoint) * scale</c> in float for every convention.
/// </remarks>
public sealed class NumericConvention
{
    private const float TorchEpsilon = 1.1920929e-07f; // torch.finfo(torch.float32).eps
    private const float SmallestNormal = 1.17549435e-38f; // numpy.finfo(numpy.float32).tiny

    private readonly ConventionKind _kind;

    private NumericConvention(string name, ConventionKind kind)
    {
        Name = name;
        _kind = kind;
    }

    private enum ConventionKind
    {
        Onnx,
        Torch,
        GgmlQ8_0,
        GoldenStick,
    }

    /// <summary>Gets ONNX Runtime's convention, the default.</summary>
    public static NumericConvention Onnx { get; } = new(nameof(Onnx), ConventionKind.Onnx);

    /// <summary>Gets PyTorch's convention.</summary>
    public static NumericConvention Torch { get; } = new(nameof(Torch), ConventionKind.Torch);

    /// <summary>Gets ggml's Q8_0 convention.</summary>
    [SuppressMessage("Naming", "CA1707:Identifiers should not contain underscores", Justification = "Q8_0 is ggml's name for the format.")]
    public static NumericConvention GgmlQ8_0 { get; } = new(nameof(GgmlQ8_0), ConventionKind.GgmlQ8_0);

    /// <summary>Gets MindSpore Golden Stick's convention.</summary>
    public static NumericConvention GoldenStick { get; } = new(nameof(GoldenStick), ConventionKind.GoldenStick);

    /// <summary>Gets all conventions.</summary>
    public static IReadOnlyList<NumericConvention> All { get; } = [Onnx, Torch, GgmlQ8_0, GoldenStick];

    /// <summary>Gets the convention's name.</summary>
    public string Name { get; }

    /// <summary>Gets how quantization rounds a value exactly halfway between two integers.</summary>
    public MidpointRounding Rounding => _kind == ConventionKind.GgmlQ8_0 ? MidpointRounding.AwayFromZero : MidpointRounding.ToEven;

    /// <summary>
    /// Gets whether quantization multiplies by the reciprocal of the scale (<see langword="true"/>: Torch, GgmlQ8_0) or
    /// divides by the scale (<see langword="false"/>: Onnx, GoldenStick). The two differ on about 3% of values near ties.
    /// </summary>
    public bool MultipliesByReciprocal => _kind is ConventionKind.Torch or ConventionKind.GgmlQ8_0;

    /// <summary>Gets whether the convention supports asymmetric (non-zero zero point) quantization.</summary>
    public bool SupportsAsymmetric => _kind != ConventionKind.GgmlQ8_0;

    /// <summary>Finds a convention by name, ignoring case.</summary>
    /// <param name="name">A name such as "Onnx" or "torch".</param>
    /// <returns>The convention.</returns>
    /// <exception cref="ArgumentException">No convention has that name.</exception>
    public static NumericConvention Parse(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        foreach (NumericConvention convention in All)
        {
            if (string.Equals(convention.Name, name, StringComparison.OrdinalIgnoreCase))
            {
                return convention;
            }
        }

        throw new ArgumentException($"Unknown numeric convention '{name}'. Known: {string.Join(", ", All)}.", nameof(name));
    }

    /// <summary>Gets the range this convention uses by default for a type and symmetry.</summary>
    /// <param name="type">The quantized type.</param>
    /// <param name="symmetric">Whether the scheme is symmetric.</param>
    /// <returns><see cref="QuantizationRange.Restricted"/> for ONNX Runtime's symmetric signed types and for GgmlQ8_0; otherwise <see cref="QuantizationRange.Full"/>.</returns>
    public QuantizationRange GetDefaultRange(QuantizedType type, bool symmetric) => _kind switch
    {
        ConventionKind.Onnx when symmetric && type.IsSigned() => QuantizationRange.Restricted,
        ConventionKind.GgmlQ8_0 when type.IsSigned() => QuantizationRange.Restricted,
        _ => QuantizationRange.Full,
    };

    /// <summary>Computes the scale and zero point for observed values in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    /// <param name="min">The smallest observed value.</param>
    /// <param name="max">The largest observed value.</param>
    /// <param name="quantMin">The smallest quantized value the scheme uses (for example -127, -128 or 0).</param>
    /// <param name="quantMax">The largest quantized value the scheme uses (for example 127 or 255).</param>
    /// <param name="symmetric">Whether the zero point is fixed at the middle of the range (0 for signed types).</param>
    /// <returns>The parameters.</returns>
    /// <exception cref="ArgumentException">The range is not finite or <paramref name="min"/> &gt; <paramref name="max"/>, the
    /// quantized range does not contain zero, or the convention does not support the request.</exception>
    public ScaleAndZeroPoint ComputeParameters(float min, float max, int quantMin, int quantMax, bool symmetric)
    {
        if (!float.IsFinite(min) || !float.IsFinite(max) || min > max)
        {
            throw new ArgumentException(Invariant($"The range [{min}, {max}] must be finite with min <= max."), nameof(min));
        }

        ValidateQuantRange(quantMin, quantMax, symmetric, nameof(quantMin));
        return Compute(min, max, quantMin, quantMax, symmetric, out _, nameof(max));
    }

    /// <summary>Computes the scale and zero point for a type, using this convention's default range.</summary>
    /// <param name="min">The smallest observed value.</param>
    /// <param name="max">The largest observed value.</param>
    /// <param name="type">The quantized type.</param>
    /// <param name="symmetric">Whether the zero point is fixed at the middle of the range.</param>
    /// <returns>The parameters.</returns>
    /// <exception cref="ArgumentException">See <see cref="ComputeParameters(float, float, int, int, bool)"/>.</exception>
    public ScaleAndZeroPoint ComputeParameters(float min, float max, QuantizedType type, bool symmetric)
    {
        if (!Enum.IsDefined(type))
        {
            throw new ArgumentOutOfRangeException(nameof(type), type, "Unknown quantized type.");
        }

        if (_kind == ConventionKind.GgmlQ8_0 && type != QuantizedType.Int8)
        {
            throw new ArgumentException($"{Name} quantizes to Int8 only, not {type}.", nameof(type));
        }

        (int quantMin, int quantMax) = GetQuantRange(type, GetDefaultRange(type, symmetric));
        return ComputeParameters(min, max, quantMin, quantMax, symmetric);
    }

    /// <summary>Quantizes one value: the scalar specification that every SIMD kernel reproduces.</summary>
    /// <param name="value">The real value.</param>
    /// <param name="scale">The scale.</param>
    /// <param name="zeroPoint">The zero point.</param>
    /// <param name="quantMin">The smallest result (the type's minimum for ONNX Runtime's QuantizeLinear).</param>
    /// <param name="quantMax">The largest result.</param>
    /// <returns><c>clamp(round(value / scale) + zeroPoint, quantMin, quantMax)</c>, with this convention's division or reciprocal and rounding. NaN gives <paramref name="quantMin"/>.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The scale is not valid for the convention (see <see cref="QuantizationPrimitives"/>), or <paramref name="quantMin"/> &gt; <paramref name="quantMax"/>.</exception>
    public int Quantize(float value, float scale, int zeroPoint, int quantMin, int quantMax)
    {
        QuantizationPrimitives.ValidateScale(scale, MultipliesByReciprocal, nameof(scale));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(quantMin, quantMax);
        float factor = GetQuantizeFactor(scale);
        return _kind switch
        {
            ConventionKind.Torch => QuantizeOperator.Quantize<MultiplyScaling, RoundToEven>(value, factor, zeroPoint, quantMin, quantMax),
            ConventionKind.GgmlQ8_0 => QuantizeOperator.Quantize<MultiplyScaling, RoundAwayFromZero>(value, factor, zeroPoint, quantMin, quantMax),
            _ => QuantizeOperator.Quantize<DivideScaling, RoundToEven>(value, factor, zeroPoint, quantMin, quantMax),
        };
    }

    /// <summary>Dequantizes one value: <c>(value - zeroPoint) * scale</c> in float.</summary>
    /// <param name="value">The quantized value.</param>
    /// <param name="scale">The scale.</param>
    /// <param name="zeroPoint">The zero point.</param>
    /// <returns>The real value.</returns>
    public static float Dequantize(int value, float scale, int zeroPoint) => (value - zeroPoint) * scale;

    /// <inheritdoc/>
    public override string ToString() => Name;

    /// <summary>Gets the quantized range for a type and range kind.</summary>
    internal static (int Min, int Max) GetQuantRange(QuantizedType type, QuantizationRange range) =>
        range == QuantizationRange.Restricted ? (type.GetMinValue() + 1, type.GetMaxValue()) : (type.GetMinValue(), type.GetMaxValue());

    /// <summary>Checks that this convention can produce parameters for the quantized range and symmetry.</summary>
    internal void ValidateQuantRange(int quantMin, int quantMax, bool symmetric, string paramName)
    {
        if (quantMin > 0 || quantMax < 0 || quantMin >= quantMax)
        {
            throw new ArgumentException(Invariant($"The quantized range [{quantMin}, {quantMax}] must contain zero and more than one value."), paramName);
        }

        if (_kind == ConventionKind.GgmlQ8_0 && (!symmetric || quantMin != -quantMax))
        {
            throw new ArgumentException($"{Name} is symmetric over a range symmetric around zero ([-127, 127] for Q8_0); asymmetric or full-range quantization is not part of it.", paramName);
        }
    }

    /// <summary>
    /// Gets the number the kernels apply to a value: the scale itself (divide) or its reciprocal (multiply; 0 for a zero
    /// scale, as ggml does, and float.MaxValue where a subnormal scale's reciprocal overflows, so that zero still maps to
    /// the zero point and everything else saturates).
    /// </summary>
    internal float GetQuantizeFactor(float scale) =>
        !MultipliesByReciprocal ? scale : scale == 0f ? 0f : MathF.Min(1f / scale, float.MaxValue);

    /// <summary>
    /// Computes parameters without validating the range; <paramref name="factor"/> is what the quantize kernel applies.
    /// A range whose GgmlQ8_0 scale overflows fp16 throws an <see cref="ArgumentException"/> for <paramref name="paramName"/>.
    /// </summary>
    internal ScaleAndZeroPoint Compute(float min, float max, int quantMin, int quantMax, bool symmetric, out float factor, string? paramName)
    {
        ScaleAndZeroPoint parameters;
        switch (_kind)
        {
            case ConventionKind.GgmlQ8_0:
                // ggml: id = d ? 1/d : 0. Where 1/d overflows (d subnormal) ggml's cast is undefined; 0 maps the
                // block to zeros, which is what its fp16 scale (0 there) dequantizes to anyway.
                float d = MathF.Max(MathF.Abs(min), MathF.Abs(max)) / quantMax;
                factor = d != 0f && float.IsFinite(1f / d) ? 1f / d : 0f;
                float stored = (float)(Half)d;
                if (float.IsInfinity(stored))
                {
                    throw new ArgumentException(Invariant($"The range [{min}, {max}] gives a scale {d} beyond the fp16 range of {Name} (|x| must stay below about 8.3e6)."), paramName);
                }

                return new ScaleAndZeroPoint(stored, 0);
            case ConventionKind.Torch:
                parameters = ComputeTorch(min, max, quantMin, quantMax, symmetric);
                break;
            default:
                parameters = ComputeOnnx(min, max, quantMin, quantMax, symmetric);
                break;
        }

        factor = GetQuantizeFactor(parameters.Scale);
        return parameters;
    }

    // onnxruntime quant_utils.compute_scale_zp: rmax - rmin in float, the quotient in double.
    private static ScaleAndZeroPoint ComputeOnnx(float min, float max, int quantMin, int quantMax, bool symmetric)
    {
        float rmin = MathF.Min(min, 0f);
        float rmax = MathF.Max(max, 0f);
        if (symmetric)
        {
            rmax = MathF.Max(MathF.Abs(rmin), MathF.Abs(rmax));
            rmin = -rmax;
        }

        double scale = RangeWidth(rmin, rmax) / ((double)quantMax - quantMin);
        if (scale < SmallestNormal)
        {
            return new ScaleAndZeroPoint(1f, 0);
        }

        double zeroPoint = symmetric ? (quantMin + quantMax) / 2.0 : quantMin - (rmin / scale);
        return new ScaleAndZeroPoint((float)scale, Math.Clamp((int)Math.Round(zeroPoint), quantMin, quantMax));
    }

    // torch.ao.quantization.observer._calculate_qparams: float arithmetic, scale floored at float epsilon.
    private static ScaleAndZeroPoint ComputeTorch(float min, float max, int quantMin, int quantMax, bool symmetric)
    {
        float rmin = MathF.Min(min, 0f);
        float rmax = MathF.Max(max, 0f);
        if (symmetric)
        {
            float amax = MathF.Max(-rmin, rmax);
            float symmetricScale = MathF.Max(amax / ((float)(quantMax - quantMin) / 2f), TorchEpsilon);
            // torch: 0 for signed types; 128 for the default uint8 range, (qmin + qmax) // 2 for a custom one.
            int zero = quantMin < 0 ? 0 : quantMin == 0 && quantMax == 255 ? 128 : (quantMin + quantMax) / 2;
            return new ScaleAndZeroPoint(symmetricScale, zero);
        }

        double width = RangeWidth(rmin, rmax);
        float steps = quantMax - quantMin;
        float scale = MathF.Max(width <= float.MaxValue ? (float)width / steps : (float)(width / steps), TorchEpsilon);
        int zeroPoint = quantMin - (int)MathF.Round(rmin / scale);
        return new ScaleAndZeroPoint(scale, Math.Clamp(zeroPoint, quantMin, quantMax));
    }

    /// <summary>rmax - rmin as the peers compute it (in float), or in double where the float difference overflows.</summary>
    private static double RangeWidth(float rmin, float rmax)
    {
        float width = rmax - rmin;
        return float.IsFinite(width) ? width : (double)rmax - rmin;
    }
}
