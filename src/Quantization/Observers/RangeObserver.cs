using System.Numerics.Tensors;

namespace Quantization;

/// <summary>
/// The shared part of the observers that track a range per parameter (<see cref="MinMaxObserver"/>,
/// <see cref="MovingAverageMinMaxObserver"/>): shape checks, the non-finite policy, and parameters from the range.
/// </summary>
/// <remarks>
/// The first <see cref="Observe"/> fixes the parameter shape (for example the channel count); later calls must match
/// it. A call that throws leaves the observer as it was. Not thread-safe: use one observer per thread and merge them.
/// </remarks>
public abstract class RangeObserver : IQuantizationObserver
{
    private int[]? _parameterShape;

    private protected RangeObserver(QuantizationScheme scheme, NonFinitePolicy nonFinitePolicy)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        if (!Enum.IsDefined(nonFinitePolicy))
        {
            throw new ArgumentOutOfRangeException(nameof(nonFinitePolicy), nonFinitePolicy, "Unknown non-finite policy.");
        }

        Scheme = scheme;
        NonFinitePolicy = nonFinitePolicy;
    }

    /// <inheritdoc/>
    public QuantizationScheme Scheme { get; }

    /// <summary>Gets what the observer does with NaN and infinities.</summary>
    public NonFinitePolicy NonFinitePolicy { get; }

    /// <inheritdoc/>
    public long ObservedCount { get; private set; }

    /// <summary>Gets the number of NaN and infinite values left out under <see cref="NonFinitePolicy.Skip"/>.</summary>
    public long SkippedCount { get; private set; }

    /// <summary>Gets the parameter shape fixed by the first observation, or an empty span before it.</summary>
    public ReadOnlySpan<int> ParameterShape => _parameterShape;

    /// <summary>Gets the tracked minimum per parameter (+infinity where no finite value was seen); empty before the first observation.</summary>
    public ReadOnlySpan<float> Minimums => Mins;

    /// <summary>Gets the tracked maximum per parameter (-infinity where no finite value was seen); empty before the first observation.</summary>
    public ReadOnlySpan<float> Maximums => Maxs;

    /// <summary>Gets or sets the tracked minimums; subclasses replace the arrays, never write into them in place.</summary>
    private protected float[] Mins { get; set; } = [];

    /// <summary>Gets or sets the tracked maximums.</summary>
    private protected float[] Maxs { get; set; } = [];

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">The shape does not fit the values or the granularity, or its parameter shape differs from earlier observations.</exception>
    /// <exception cref="NonFiniteValueException">The values contain NaN or an infinity and the policy is <see cref="NonFinitePolicy.Throw"/>.</exception>
    public void Observe(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, string? tensorName = null)
    {
        TensorLayout layout = TensorLayout.Create(shape, Scheme.Granularity, nameof(shape));
        layout.RequireElementCount(values.Length, shape, tensorName, nameof(values));

        int[] parameterShape = Scheme.Granularity.GetParameterShape(shape);
        if (_parameterShape is not null && !parameterShape.AsSpan().SequenceEqual(_parameterShape))
        {
            throw new ArgumentException(FormattableString.Invariant($"{TensorNames.Describe(tensorName)} gives parameter shape [{string.Join(", ", parameterShape)}] for {Scheme.Granularity}, but earlier observations gave [{string.Join(", ", _parameterShape)}]."), nameof(shape));
        }

        float[] batchMins = new float[layout.ParameterCount];
        float[] batchMaxs = new float[layout.ParameterCount];
        Array.Fill(batchMins, float.PositiveInfinity);
        Array.Fill(batchMaxs, float.NegativeInfinity);
        long skipped = QuantizationPrimitives.ObserveRanges(values, layout, batchMins, batchMaxs, NonFinitePolicy, tensorName, nameof(values));

        // Nothing has changed yet: a call that throws above leaves the observer as it was.
        bool first = _parameterShape is null;
        _parameterShape = parameterShape;
        Accumulate(batchMins, batchMaxs, first);
        ObservedCount += values.Length - skipped;
        SkippedCount += skipped;
    }

    /// <inheritdoc/>
    /// <remarks>A parameter that saw no finite value gets the parameters of the range [0, 0].</remarks>
    /// <exception cref="InvalidOperationException">Nothing has been observed.</exception>
    /// <exception cref="ArgumentException">(GgmlQ8_0) a tracked range overflows the fp16 scale.</exception>
    public QuantizationParameters ComputeParameters()
    {
        if (_parameterShape is null)
        {
            throw new InvalidOperationException("The observer has observed nothing; call Observe first.");
        }

        float[] scales = new float[Mins.Length];
        int[] zeroPoints = new int[Mins.Length];
        QuantizationPrimitives.FillFromRanges(Scheme, Mins, Maxs, scales, zeroPoints, [], sourceName: null);
        return QuantizationParameters.Own(scales, zeroPoints);
    }

    /// <summary>Forgets everything observed, including the parameter shape.</summary>
    public virtual void Reset()
    {
        (Mins, Maxs, _parameterShape) = ([], [], null);
        ObservedCount = 0;
        SkippedCount = 0;
    }

    /// <summary>Folds one batch's ranges (+/-infinity where a parameter saw no finite value) into the state.</summary>
    /// <param name="batchMins">The batch's minimum per parameter; the observer may keep the array.</param>
    /// <param name="batchMaxs">The batch's maximum per parameter; the observer may keep the array.</param>
    /// <param name="first">Whether this is the first batch since construction or <see cref="Reset"/>.</param>
    private protected abstract void Accumulate(float[] batchMins, float[] batchMaxs, bool first);

    /// <summary>Checks that <paramref name="other"/> can be merged into this observer and takes over the shared counters.</summary>
    /// <returns>Whether there is anything to merge (false when <paramref name="other"/> has observed nothing).</returns>
    private protected bool BeginMerge(RangeObserver other, out bool thisIsEmpty)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (!Scheme.Equals(other.Scheme) || GetType() != other.GetType())
        {
            throw new ArgumentException($"Cannot merge a {other.GetType().Name} of {other.Scheme} into a {GetType().Name} of {Scheme}.", nameof(other));
        }

        thisIsEmpty = _parameterShape is null;
        if (other._parameterShape is null)
        {
            return false;
        }

        if (!thisIsEmpty && !_parameterShape.AsSpan().SequenceEqual(other._parameterShape))
        {
            throw new ArgumentException(FormattableString.Invariant($"Cannot merge parameter shape [{string.Join(", ", other._parameterShape)}] into [{string.Join(", ", _parameterShape!)}]."), nameof(other));
        }

        _parameterShape = other._parameterShape;
        ObservedCount += other.ObservedCount;
        SkippedCount += other.SkippedCount;
        return true;
    }

    /// <summary>Element-wise min and max of two range sets (used by the min/max merge).</summary>
    private protected static (float[] Mins, float[] Maxs) Union(float[] mins, float[] maxs, float[] otherMins, float[] otherMaxs)
    {
        float[] unionMins = new float[mins.Length], unionMaxs = new float[maxs.Length];
        TensorPrimitives.Min(mins, otherMins, unionMins);
        TensorPrimitives.Max(maxs, otherMaxs, unionMaxs);
        return (unionMins, unionMaxs);
    }
}
