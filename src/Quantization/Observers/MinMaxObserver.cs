namespace Quantization;

/// <summary>
/// Tracks the running minimum and maximum of every parameter's elements: the statistic of round-to-nearest (RTN)
/// quantization and of MinMax calibration. Mergeable: two observers fed two parts of the data, merged in either order,
/// hold exactly what one observer fed all of it holds, so calibration can be sharded and resumed.
/// </summary>
/// <remarks>
/// The first <see cref="Observe"/> fixes the parameter shape (for example the channel count); later calls must match
/// it. A call that throws leaves the observer as it was. Not thread-safe: use one observer per thread and
/// <see cref="Merge"/> them.
/// </remarks>
public sealed class MinMaxObserver : IQuantizationObserver
{
    private float[] _mins = [];
    private float[] _maxs = [];
    private int[]? _parameterShape;

    /// <summary>Initializes a new instance of the <see cref="MinMaxObserver"/> class.</summary>
    /// <param name="scheme">The scheme: its granularity decides which elements share statistics, its convention computes the parameters.</param>
    /// <param name="nonFinitePolicy">What to do with NaN and infinities: throw (the default) or skip and count them.</param>
    /// <exception cref="ArgumentNullException"><paramref name="scheme"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="nonFinitePolicy"/> is not a defined value.</exception>
    public MinMaxObserver(QuantizationScheme scheme, NonFinitePolicy nonFinitePolicy = NonFinitePolicy.Throw)
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

    /// <summary>Gets the minimum per parameter (+infinity where no finite value was seen); empty before the first observation.</summary>
    public ReadOnlySpan<float> Minimums => _mins;

    /// <summary>Gets the maximum per parameter (-infinity where no finite value was seen); empty before the first observation.</summary>
    public ReadOnlySpan<float> Maximums => _maxs;

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">The shape does not fit the values or the granularity, or its parameter shape differs from earlier observations.</exception>
    /// <exception cref="NonFiniteValueException">The values contain NaN or an infinity and the policy is <see cref="NonFinitePolicy.Throw"/>.</exception>
    public void Observe(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, string? tensorName = null)
    {
        TensorLayout layout = TensorLayout.Create(shape, Scheme.Granularity, nameof(shape));
        if (layout.ElementCount != values.Length)
        {
            throw new ArgumentException(FormattableString.Invariant($"The shape [{string.Join(", ", shape.ToArray())}] has {layout.ElementCount} elements but there are {values.Length} values."), nameof(values));
        }

        int[] parameterShape = Scheme.Granularity.GetParameterShape(shape);
        if (_parameterShape is not null && !parameterShape.AsSpan().SequenceEqual(_parameterShape))
        {
            throw new ArgumentException(FormattableString.Invariant($"{TensorNames.Describe(tensorName)} gives parameter shape [{string.Join(", ", parameterShape)}] for {Scheme.Granularity}, but earlier observations gave [{string.Join(", ", _parameterShape)}]."), nameof(shape));
        }

        // Work on copies and commit at the end, so that a call that throws changes nothing.
        float[] mins = _parameterShape is null ? Filled(layout.ParameterCount, float.PositiveInfinity) : (float[])_mins.Clone();
        float[] maxs = _parameterShape is null ? Filled(layout.ParameterCount, float.NegativeInfinity) : (float[])_maxs.Clone();
        long skipped = QuantizationPrimitives.ObserveRanges(values, layout, mins, maxs, NonFinitePolicy, tensorName, nameof(values));
        (_mins, _maxs, _parameterShape) = (mins, maxs, parameterShape);
        ObservedCount += values.Length - skipped;
        SkippedCount += skipped;
    }

    /// <summary>Folds another observer's statistics into this one's.</summary>
    /// <param name="other">An observer with the same scheme that has seen the same parameter shape (or nothing).</param>
    /// <exception cref="ArgumentNullException"><paramref name="other"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The schemes or the parameter shapes differ.</exception>
    public void Merge(MinMaxObserver other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (!Scheme.Equals(other.Scheme))
        {
            throw new ArgumentException($"Cannot merge an observer of {other.Scheme} into one of {Scheme}.", nameof(other));
        }

        if (other._parameterShape is null)
        {
            return;
        }

        if (_parameterShape is null)
        {
            (_mins, _maxs, _parameterShape) = ((float[])other._mins.Clone(), (float[])other._maxs.Clone(), other._parameterShape);
        }
        else if (!_parameterShape.AsSpan().SequenceEqual(other._parameterShape))
        {
            throw new ArgumentException(FormattableString.Invariant($"Cannot merge parameter shape [{string.Join(", ", other._parameterShape)}] into [{string.Join(", ", _parameterShape)}]."), nameof(other));
        }
        else
        {
            System.Numerics.Tensors.TensorPrimitives.Min(_mins, other._mins, _mins);
            System.Numerics.Tensors.TensorPrimitives.Max(_maxs, other._maxs, _maxs);
        }

        ObservedCount += other.ObservedCount;
        SkippedCount += other.SkippedCount;
    }

    /// <inheritdoc/>
    /// <remarks>A parameter that saw no finite value gets the parameters of the range [0, 0].</remarks>
    /// <exception cref="InvalidOperationException">Nothing has been observed.</exception>
    public QuantizationParameters ComputeParameters()
    {
        if (_parameterShape is null)
        {
            throw new InvalidOperationException("The observer has observed nothing; call Observe first.");
        }

        float[] scales = new float[_mins.Length];
        int[] zeroPoints = new int[_mins.Length];
        for (int p = 0; p < scales.Length; p++)
        {
            bool seen = _mins[p] <= _maxs[p];
            (scales[p], zeroPoints[p]) = Scheme.Convention.Compute(seen ? _mins[p] : 0f, seen ? _maxs[p] : 0f, Scheme.QuantMin, Scheme.QuantMax, Scheme.Symmetric, out _, paramName: null);
        }

        return QuantizationParameters.Own(scales, zeroPoints);
    }

    /// <summary>Forgets everything observed, including the parameter shape.</summary>
    public void Reset()
    {
        (_mins, _maxs, _parameterShape) = ([], [], null);
        ObservedCount = 0;
        SkippedCount = 0;
    }

    private static float[] Filled(int count, float value)
    {
        float[] array = new float[count];
        Array.Fill(array, value);
        return array;
    }
}
