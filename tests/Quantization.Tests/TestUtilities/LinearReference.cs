namespace Quantization.Tests.TestUtilities;

/// <summary>The float reference of a linear layer and the data the linear-layer accuracy tests feed it.</summary>
internal static class LinearReference
{
    /// <summary>y[t, o] = Σ_i W[o, i]·x[t, i] in double: the layer the quantized paths approximate.</summary>
    public static double[] Fp32Linear(float[] weight, float[] input, int tokens, int n, int k)
    {
        double[] output = new double[tokens * n];
        for (int t = 0; t < tokens; t++)
        {
            for (int o = 0; o < n; o++)
            {
                double sum = 0;
                for (int i = 0; i < k; i++)
                {
                    sum += (double)weight[(o * k) + i] * input[(t * k) + i];
                }

                output[(t * n) + o] = sum;
            }
        }

        return output;
    }

    /// <summary>The cosine of a double reference and a float result.</summary>
    public static double Cosine(double[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += a[i] * b[i];
            na += a[i] * a[i];
            nb += (double)b[i] * b[i];
        }

        return dot / Math.Sqrt(na * nb);
    }

    /// <summary>Normal values with standard deviation <paramref name="sigma"/> (Box-Muller).</summary>
    public static float[] Gaussian(Random random, int length, float sigma)
    {
        float[] values = new float[length];
        for (int i = 0; i < length; i++)
        {
            values[i] = sigma * (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        }

        return values;
    }
}
