using static System.FormattableString;

namespace Quantization;

/// <summary>
/// A tensor shape seen through a granularity: [Outer, Channels, Inner] around the granularity's axis, with the
/// number of parameter pairs. Every granularity's parameter index is a function of (outer, channel, inner).
/// </summary>
internal readonly struct TensorLayout
{
    private TensorLayout(GranularityKind kind, int axis, int outer, int channels, int inner, int groupSize, int parameterCount)
    {
        Kind = kind;
        Axis = axis;
        Outer = outer;
        Channels = channels;
        Inner = inner;
        GroupSize = groupSize;
        ParameterCount = parameterCount;
    }

    public GranularityKind Kind { get; }

    /// <summary>Gets the normalised (non-negative) axis.</summary>
    public int Axis { get; }

    public int Outer { get; }

    public int Channels { get; }

    public int Inner { get; }

    /// <summary>Gets the group size along the axis: the granularity's for per-group, the whole row for per-token.</summary>
    public int GroupSize { get; }

    public int ParameterCount { get; }

    public int ElementCount => Outer * Channels * Inner;

    /// <summary>
    /// Gets whether every parameter pair covers exactly one contiguous run, so that observing a run and quantizing it
    /// can be fused while the run is in cache (per tensor, per channel of the first axis, per group along the last
    /// axis, per token).
    /// </summary>
    public bool EachParameterIsOneRun => Kind switch
    {
        GranularityKind.PerTensor => true,
        GranularityKind.PerChannel => Outer == 1 && Inner > 1,
        _ => Inner == 1,
    };

    /// <summary>Checks that a tensor's data holds exactly the shape's element count.</summary>
    public void RequireElementCount(int count, ReadOnlySpan<int> shape, string? tensorName, string paramName)
    {
        if (count != ElementCount)
        {
            throw new ArgumentException(Invariant($"{TensorNames.Describe(tensorName)} has shape [{string.Join(", ", shape.ToArray())}] ({ElementCount} elements) but {count} values."), paramName);
        }
    }

    /// <summary>Validates <paramref name="shape"/> against <paramref name="granularity"/> and resolves the layout.</summary>
    public static TensorLayout Create(ReadOnlySpan<int> shape, QuantizationGranularity granularity, string paramName)
    {
        if (shape.IsEmpty)
        {
            throw new ArgumentException("The shape must have at least one dimension.", paramName);
        }

        // The product of the non-zero dimensions bounds the element count and every parameter count, including those
        // of an empty tensor (shape [0, 2^31 - 1] has no elements but would need 2^31 - 1 per-channel parameters).
        long bound = 1;
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] < 0)
            {
                throw new ArgumentException(Invariant($"Dimension {i} of the shape is negative ({shape[i]})."), paramName);
            }

            bound *= Math.Max(shape[i], 1);
            if (bound > Array.MaxLength)
            {
                throw new ArgumentException(Invariant($"The shape [{string.Join(", ", shape.ToArray())}] is too large: its non-zero dimensions multiply to more than {Array.MaxLength}."), paramName);
            }
        }

        GranularityKind kind = granularity.Kind;
        int axis = kind switch
        {
            GranularityKind.PerChannel or GranularityKind.PerGroup => NormalizeAxis(granularity.Axis, shape.Length, paramName),
            GranularityKind.PerToken => shape.Length - 1,
            _ => 0,
        };

        int outer = Product(shape[..axis]);
        int channels = shape[axis];
        int inner = Product(shape[(axis + 1)..]);
        int groupSize = kind == GranularityKind.PerToken ? channels : granularity.GroupSize;
        int parameterCount = kind switch
        {
            GranularityKind.PerChannel => channels,
            GranularityKind.PerGroup => outer * GroupCount(channels, groupSize) * inner,
            GranularityKind.PerToken => outer,
            _ => 1,
        };
        return new TensorLayout(kind, axis, outer, channels, inner, groupSize, parameterCount);
    }

    /// <summary>Calls <paramref name="visitor"/> once per run of elements, in memory order, covering the tensor once.</summary>
    /// <remarks>
    /// A uniform run shares one parameter pair; in a per-lane run element j uses parameter first + j. The split
    /// keeps every run contiguous, so kernels see long spans whatever the axis.
    /// </remarks>
    public void Visit<TVisitor>(ref TVisitor visitor)
        where TVisitor : IRunVisitor, allows ref struct
    {
        if (ElementCount == 0)
        {
            return;
        }

        switch (Kind)
        {
            case GranularityKind.PerTensor:
                visitor.Uniform(0, ElementCount, 0);
                break;
            case GranularityKind.PerChannel when Inner == 1:
                for (int o = 0; o < Outer; o++)
                {
                    visitor.PerLane(o * Channels, Channels, 0);
                }

                break;
            case GranularityKind.PerChannel:
                for (int o = 0; o < Outer; o++)
                {
                    for (int c = 0; c < Channels; c++)
                    {
                        visitor.Uniform(((o * Channels) + c) * Inner, Inner, c);
                    }
                }

                break;
            default:
                int groups = GroupCount(Channels, GroupSize);
                for (int o = 0; o < Outer; o++)
                {
                    for (int c = 0; c < Channels; c++)
                    {
                        int parameter = ((o * groups) + (c / GroupSize)) * Inner;
                        if (Inner == 1)
                        {
                            int length = Math.Min(GroupSize, Channels - c);
                            visitor.Uniform((o * Channels) + c, length, parameter);
                            c += length - 1;
                        }
                        else
                        {
                            visitor.PerLane(((o * Channels) + c) * Inner, Inner, parameter);
                        }
                    }
                }

                break;
        }
    }

    /// <summary>The number of groups of <paramref name="groupSize"/> along a dimension of <paramref name="length"/>: the last may be partial.</summary>
    internal static int GroupCount(int length, int groupSize) => (int)(((long)length + groupSize - 1) / groupSize);

    private static int NormalizeAxis(int axis, int rank, string paramName)
    {
        int normalized = axis < 0 ? axis + rank : axis;
        if ((uint)normalized >= (uint)rank)
        {
            throw new ArgumentException(Invariant($"Axis {axis} is outside a shape of rank {rank}."), paramName);
        }

        return normalized;
    }

    private static int Product(ReadOnlySpan<int> dims)
    {
        int product = 1;
        foreach (int d in dims)
        {
            product *= d;
        }

        return product;
    }
}

/// <summary>Receives the runs of a <see cref="TensorLayout"/>.</summary>
internal interface IRunVisitor
{
    /// <summary>Elements [start, start + length) share parameter <paramref name="parameter"/>.</summary>
    void Uniform(int start, int length, int parameter);

    /// <summary>Element start + j uses parameter <paramref name="firstParameter"/> + j, for j in [0, length).</summary>
    void PerLane(int start, int length, int firstParameter);
}
