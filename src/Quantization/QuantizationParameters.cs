using System.Globalization;

namespace Quantization;

/// <summary>
/// The scales and zero points of a quantized tensor, in the layout of <see cref="QuantizationGranularity.GetParameterShape"/>
/// flattened row-major: one pair per tensor, channel, group or token. Immutable.
/// </summary>
public sealed class QuantizationParameters
{
    private readonly float[] _scales;
    private readonly int[] _zeroPoints;

    /// <summary>Initializes a new instance of the <see cref="QuantizationParameters"/> class with one pair.</summary>
    /// <param name="scale">The scale: finite and not negative.</param>
    /// <param name="zeroPoint">The zero point.</param>
    /// <exception cref="ArgumentOutOfRangeException">The scale is negative or not finite.</exception>
    public QuantizationParameters(float scale, int zeroPoint = 0)
        : this([scale], [zeroPoint])
    {
    }

    /// <summary>Initializes a new instance of the <see cref="QuantizationParameters"/> class; the spans are copied.</summary>
    /// <param name="scales">The scales: finite and not negative.</param>
    /// <param name="zeroPoints">The zero points, one per scale; empty for all zero.</param>
    /// <exception cref="ArgumentException">The lengths differ.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scale is negative or not finite.</exception>
    public QuantizationParameters(ReadOnlySpan<float> scales, ReadOnlySpan<int> zeroPoints)
        : this(scales.ToArray(), zeroPoints.IsEmpty ? new int[scales.Length] : zeroPoints.ToArray())
    {
    }

    private QuantizationParameters(float[] scales, int[] zeroPoints)
    {
        if (scales.Length != zeroPoints.Length)
        {
            throw new ArgumentException($"There are {scales.Length} scales but {zeroPoints.Length} zero points.", nameof(zeroPoints));
        }

        for (int i = 0; i < scales.Length; i++)
        {
            QuantizationPrimitives.ValidateScale(scales[i], allowZero: true, nameof(scales), i);
        }

        _scales = scales;
        _zeroPoints = zeroPoints;
    }

    /// <summary>Gets the number of (scale, zero point) pairs.</summary>
    public int Count => _scales.Length;

    /// <summary>Gets the scales.</summary>
    public ReadOnlySpan<float> Scales => _scales;

    /// <summary>Gets the zero points.</summary>
    public ReadOnlySpan<int> ZeroPoints => _zeroPoints;

    /// <summary>Gets one pair.</summary>
    /// <param name="index">The pair's index.</param>
    /// <returns>The pair.</returns>
    public ScaleAndZeroPoint this[int index] => new(_scales[index], _zeroPoints[index]);

    /// <summary>Wraps arrays that the caller hands over (no copy).</summary>
    internal static QuantizationParameters Own(float[] scales, int[] zeroPoints) => new(scales, zeroPoints);

    /// <inheritdoc/>
    public override string ToString() => Count switch
    {
        0 => "no parameters",
        1 => string.Create(CultureInfo.InvariantCulture, $"scale {_scales[0]}, zero point {_zeroPoints[0]}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{Count} scales in [{_scales.Min()}, {_scales.Max()}]"),
    };
}
