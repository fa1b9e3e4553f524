namespace Quantization;

/// <summary>
/// Tracks the running minimum and maximum of every parameter's elements: the statistic of round-to-nearest (RTN)
/// quantization and of MinMax calibration. Mergeable: two observers fed two parts of the data, merged in either order,
/// hold exactly what one observer fed all of it holds, so calibration can be sharded and resumed.
/// </summary>
public sealed class MinMaxObserver : RangeObserver
{
    /// <summary>Initializes a new instance of the <see cref="MinMaxObserver"/> class.</summary>
    /// <param name="scheme">The scheme: its granularity decides which elements share statistics, its convention computes the parameters.</param>
    /// <param name="nonFinitePolicy">What to do with NaN and infinities: throw (the default) or skip and count them.</param>
    /// <exception cref="ArgumentNullException"><paramref name="scheme"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="nonFinitePolicy"/> is not a defined value.</exception>
    public MinMaxObserver(QuantizationScheme scheme, NonFinitePolicy nonFinitePolicy = NonFinitePolicy.Throw)
        : base(scheme, nonFinitePolicy)
    {
    }

    /// <summary>Folds another observer's statistics into this one's; the order does not matter.</summary>
    /// <param name="other">An observer with the same scheme that has seen the same parameter shape (or nothing).</param>
    /// <exception cref="ArgumentNullException"><paramref name="other"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The schemes or the parameter shapes differ.</exception>
    public void Merge(MinMaxObserver other)
    {
        if (BeginMerge(other, out bool thisIsEmpty))
        {
            (Mins, Maxs) = thisIsEmpty ? ((float[])other.Mins.Clone(), (float[])other.Maxs.Clone()) : Union(Mins, Maxs, other.Mins, other.Maxs);
        }
    }

    private protected override void Accumulate(float[] batchMins, float[] batchMaxs, bool first) =>
        (Mins, Maxs) = first ? (batchMins, batchMaxs) : Union(Mins, Maxs, batchMins, batchMaxs);
}
