namespace Quantization.Tests.TestUtilities;

/// <summary>
/// Straightforward implementations of the histogram observers' documented definitions, written from the XML docs
/// (all data at once, direct sums, no prefix sums or incremental updates).
/// </summary>
internal static class HistogramReference
{
    /// <summary>The histogram of |x| of all finite values: width 2^e with e the smallest integer where amax &lt; bins · 2^e.</summary>
    public static (long[] Counts, double Width, int Used) Histogram(IEnumerable<float> values, int binCount)
    {
        double[] magnitudes = values.Where(float.IsFinite).Select(v => Math.Abs((double)v)).ToArray();
        long[] counts = new long[binCount];
        double amax = magnitudes.Length == 0 ? 0 : magnitudes.Max();
        if (amax == 0)
        {
            counts[0] = magnitudes.Length;
            return (counts, 0, magnitudes.Length == 0 ? 0 : 1);
        }

        int e = -400;
        while (!(amax < binCount * Math.Pow(2, e)))
        {
            e++;
        }

        double width = Math.Pow(2, e);
        foreach (double m in magnitudes)
        {
            counts[(int)Math.Floor(m / width)]++;
        }

        return (counts, width, (int)Math.Floor(amax / width) + 1);
    }

    /// <summary>KL(P‖Q) of candidate i, from the definition (scipy's entropy of the folded P and the spread Q).</summary>
    public static double Divergence(long[] used, int i, int quantizedBins)
    {
        double[] c = used.Select(x => (double)x).ToArray();
        c[0] = c[1];
        double[] p = new double[i];
        Array.Copy(c, p, i);
        for (int j = i; j < c.Length; j++)
        {
            p[i - 1] += c[j];
        }

        double[] q = new double[i];
        for (int k = 0; k < quantizedBins; k++)
        {
            int[] members = Enumerable.Range(0, i).Where(j => j * quantizedBins / i == k).ToArray();
            double total = members.Sum(j => c[j]);
            int nonEmpty = members.Count(j => c[j] != 0);
            foreach (int j in members)
            {
                q[j] = c[j] != 0 ? total / nonEmpty : 0;
            }
        }

        double sumP = p.Sum(), sumQ = q.Sum();
        double divergence = 0;
        for (int j = 0; j < i; j++)
        {
            if (p[j] > 0)
            {
                if (q[j] == 0)
                {
                    return double.PositiveInfinity;
                }

                double pj = p[j] / sumP, qj = q[j] / sumQ;
                divergence += pj * Math.Log(pj / qj);
            }
        }

        return divergence;
    }

    /// <summary>E(t) of the MSE observer from its definition.</summary>
    public static double SquaredError(long[] used, double width, float threshold, QuantizationScheme scheme, float min, float max)
    {
        (float low, float high) = scheme.Symmetric ? (-threshold, threshold) : (Math.Min(0f, Math.Max(min, -threshold)), Math.Max(0f, Math.Min(max, threshold)));
        double scale = scheme.Convention.ComputeParameters(low, high, scheme.QuantMin, scheme.QuantMax, scheme.Symmetric).Scale;
        double error = 0;
        for (int j = 0; j < used.Length; j++)
        {
            double x = (j + 0.5) * width;
            double e = x > threshold ? x - threshold : x - (scale * Math.Round(x / scale, scheme.Convention.Rounding));
            error += used[j] * e * e;
        }

        return error;
    }
}
