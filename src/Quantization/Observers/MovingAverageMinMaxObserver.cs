namespace Quantization;

/// <summary>
/// Tracks an exponential moving average of each batch's minimum and maximum per parameter, as torch.ao's
/// MovingAverageMinMaxObserver does: the first batch sets the range, each later one moves it by
/// <c>min += c * (batchMin - min)</c> (likewise for max), in float. Smoother than the running extremes on activations
/// with rare spikes.
/// </summary>
/// <remarks>
/// A parameter whose batch held no finite value (all skipped) keeps its range for that batch. Moving averages depend on
/// the order of the batches, so <see cref="Merge"/> takes the other observer as the one that saw the later batches.
/// </remarks>
public sealed class MovingAverageMinMaxObserver : RangeObserver
{
    private float[] _firstMins = [];
    private float[] _firstMaxs = [];
    private long[] _batches = [];

    /// <summary>Initializes a new instance of the <see cref="MovingAverageMinMaxObserver"/> class.</summary>
    /// <param name="scheme">The scheme: its granularity decides which elements share statistics, its convention computes the parameters.</param>
    /// <param name="averagingConstant">The weight c of each new batch, in (0, 1]; torch's default is 0.01.</param>
    /// <param name="nonFinitePolicy">What to do with NaN and infinities: throw (the default) or skip and count them.</param>
    /// <exception cref="ArgumentNullException"><paramref name="scheme"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="averagingConstant"/> is outside (0, 1], or <paramref name="nonFinitePolicy"/> is not a defined value.</exception>
    public MovingAverageMinMaxObserver(QuantizationScheme scheme, float averagingConstant = 0.01f, NonFinitePolicy nonFinitePolicy = NonFinitePolicy.Throw)
        : base(scheme, nonFinitePolicy)
    {
        if (!(averagingConstant > 0f && averagingConstant <= 1f))
        {
            throw new ArgumentOutOfRangeException(nameof(averagingConstant), averagingConstant, "The averaging constant must be in (0, 1].");
        }

        AveragingConstant = averagingConstant;
    }

    /// <summary>Gets the weight of each new batch.</summary>
    public float AveragingConstant { get; }

    /// <summary>
    /// Folds in the statistics of an observer that saw the batches that came after this one's, giving the moving average
    /// of all of them: for each parameter, <c>(1 - c)^k * (this - first of other) + other</c>, where other saw k batches.
    /// The result equals feeding all batches to one observer up to float rounding.
    /// </summary>
    /// <param name="later">An observer with the same scheme and averaging constant that saw the later batches.</param>
    /// <exception cref="ArgumentNullException"><paramref name="later"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The schemes, averaging constants or parameter shapes differ.</exception>
    public void Merge(MovingAverageMinMaxObserver later)
    {
        ArgumentNullException.ThrowIfNull(later);
        if (later.AveragingConstant != AveragingConstant)
        {
            throw new ArgumentException($"Cannot merge an averaging constant of {later.AveragingConstant} into {AveragingConstant}.", nameof(later));
        }

        if (!BeginMerge(later, out bool thisIsEmpty))
        {
            return;
        }

        if (thisIsEmpty)
        {
            (Mins, Maxs) = ((float[])later.Mins.Clone(), (float[])later.Maxs.Clone());
            (_firstMins, _firstMaxs, _batches) = ((float[])later._firstMins.Clone(), (float[])later._firstMaxs.Clone(), (long[])later._batches.Clone());
            return;
        }

        float[] mins = (float[])Mins.Clone(), maxs = (float[])Maxs.Clone();
        for (int p = 0; p < mins.Length; p++)
        {
            long k = later._batches[p];
            if (k == 0)
            {
                continue;
            }

            if (_batches[p] == 0)
            {
                (mins[p], maxs[p], _firstMins[p], _firstMaxs[p]) = (later.Mins[p], later.Maxs[p], later._firstMins[p], later._firstMaxs[p]);
            }
            else
            {
                double decay = Math.Pow(1 - (double)AveragingConstant, k);
                mins[p] = (float)((decay * (mins[p] - (double)later._firstMins[p])) + later.Mins[p]);
                maxs[p] = (float)((decay * (maxs[p] - (double)later._firstMaxs[p])) + later.Maxs[p]);
            }

            _batches[p] += k;
        }

        (Mins, Maxs) = (mins, maxs);
    }

    /// <inheritdoc/>
    public override void Reset()
    {
        base.Reset();
        (_firstMins, _firstMaxs, _batches) = ([], [], []);
    }

    /// <summary>torch's step <c>m + c * (b - m)</c> in float; in double where b - m overflows float (values of opposite sign near float.MaxValue), so the average stays finite.</summary>
    private float Step(float average, float batch)
    {
        float moved = average + (AveragingConstant * (batch - average));
        return float.IsFinite(moved) ? moved : (float)(average + (AveragingConstant * ((double)batch - average)));
    }

    private protected override void Accumulate(float[] batchMins, float[] batchMaxs, bool first)
    {
        if (first)
        {
            (_firstMins, _firstMaxs, _batches) = (new float[batchMins.Length], new float[batchMins.Length], new long[batchMins.Length]);
            Array.Fill(_firstMins, float.PositiveInfinity);
            Array.Fill(_firstMaxs, float.NegativeInfinity);
            (Mins, Maxs) = ((float[])_firstMins.Clone(), (float[])_firstMaxs.Clone());
        }

        float[] mins = (float[])Mins.Clone(), maxs = (float[])Maxs.Clone();
        for (int p = 0; p < batchMins.Length; p++)
        {
            if (batchMins[p] > batchMaxs[p])
            {
                continue; // no finite value for this parameter in this batch
            }

            if (_batches[p] == 0)
            {
                (mins[p], maxs[p], _firstMins[p], _firstMaxs[p]) = (batchMins[p], batchMaxs[p], batchMins[p], batchMaxs[p]);
            }
            else
            {
                mins[p] = Step(mins[p], batchMins[p]);
                maxs[p] = Step(maxs[p], batchMaxs[p]);
            }

            _batches[p]++;
        }

        (Mins, Maxs) = (mins, maxs);
    }
}
