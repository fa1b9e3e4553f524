using System.Globalization;

namespace Quantization;

/// <summary>
/// Which elements of a tensor share one scale and zero point. Create values with <see cref="PerTensor"/>,
/// <see cref="PerChannel"/>, <see cref="PerGroup"/> or <see cref="PerToken"/>.
/// </summary>
/// <remarks>Axes may be negative and then count from the last axis, as in ONNX (-1 is the last axis).</remarks>
public readonly record struct QuantizationGranularity
{
    private QuantizationGranularity(GranularityKind kind, int axis, int groupSize)
    {
        Kind = kind;
        Axis = axis;
        GroupSize = groupSize;
    }

    /// <summary>Gets the kind of granularity.</summary>
    public GranularityKind Kind { get; }

    /// <summary>Gets the channel axis (<see cref="GranularityKind.PerChannel"/>) or the blocked axis (<see cref="GranularityKind.PerGroup"/>); 0 otherwise.</summary>
    public int Axis { get; }

    /// <summary>Gets the number of consecutive indices along <see cref="Axis"/> that share parameters (<see cref="GranularityKind.PerGroup"/>); 0 otherwise.</summary>
    public int GroupSize { get; }

    /// <summary>Gets the per-tensor granularity: one scale and zero point for the whole tensor.</summary>
    public static QuantizationGranularity PerTensor => default;

    /// <summary>Gets the per-token granularity: one scale and zero point per row of the last axis.</summary>
    public static QuantizationGranularity PerToken => new(GranularityKind.PerToken, 0, 0);

    /// <summary>Creates a per-channel granularity.</summary>
    /// <param name="axis">The channel axis: 0 for Conv and for [out, in] linear weights; may be negative.</param>
    /// <returns>The granularity.</returns>
    public static QuantizationGranularity PerChannel(int axis = 0) => new(GranularityKind.PerChannel, axis, 0);

    /// <summary>Creates a per-group (blocked) granularity.</summary>
    /// <param name="groupSize">The number of consecutive elements along <paramref name="axis"/> that share parameters; the last group along the axis is partial when it does not divide that dimension.</param>
    /// <param name="axis">The blocked axis; the default -1 is the last axis (the input features of an [out, in] weight).</param>
    /// <returns>The granularity.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="groupSize"/> is not positive.</exception>
    public static QuantizationGranularity PerGroup(int groupSize, int axis = -1)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(groupSize);
        return new(GranularityKind.PerGroup, axis, groupSize);
    }

    /// <summary>Gets the shape of the scale and zero-point tensors for a tensor of the given shape.</summary>
    /// <param name="shape">The shape of the quantized tensor.</param>
    /// <returns>The parameter shape; [1] for per-tensor.</returns>
    /// <exception cref="ArgumentException">The shape is empty or has a negative dimension, or the axis is outside it.</exception>
    public int[] GetParameterShape(ReadOnlySpan<int> shape)
    {
        TensorLayout layout = TensorLayout.Create(shape, this, nameof(shape));
        switch (Kind)
        {
            case GranularityKind.PerChannel:
                return [layout.Channels];
            case GranularityKind.PerGroup:
                int[] blocked = shape.ToArray();
                blocked[layout.Axis] = TensorLayout.GroupCount(blocked[layout.Axis], GroupSize);
                return blocked;
            case GranularityKind.PerToken:
                return shape.Length == 1 ? [1] : shape[..^1].ToArray();
            default:
                return [1];
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Kind switch
    {
        GranularityKind.PerChannel => string.Create(CultureInfo.InvariantCulture, $"PerChannel(axis: {Axis})"),
        GranularityKind.PerGroup => string.Create(CultureInfo.InvariantCulture, $"PerGroup(groupSize: {GroupSize}, axis: {Axis})"),
        _ => Kind.ToString(),
    };
}
